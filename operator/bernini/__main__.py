import sys

from bernini.cli import main

sys.exit(main())
