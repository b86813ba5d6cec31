"""The Ray Serve application that runs the compiled Bernini stages."""
