"""Static shapes of every compiled stage (Neuron graphs are shape-specialised)."""

IMAGE_SIZE = 224
POINTS = 25_000
TEXT_TOKENS = 77
TEXT_VOCAB = 4096
CONDITION_DIM = 128
LATENT_CHANNELS = 4
LATENT_SIZE = 12
SDF_SIZE = 64  # production: 256
GUIDANCE_BATCH = 2  # conditional + unconditional, for classifier-free guidance
DECODER_BATCHES = (1, 4)  # the decoder is compiled once per batch bucket; Serve batches requests into them
MODALITIES = ("image", "pointcloud", "text")
