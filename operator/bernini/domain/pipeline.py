"""The Bernini pipeline's fixed shape, shared by the renderer, the Serve application and the compile tool."""

# Order matters: each stage feeds the next.
STAGES = ("encoder", "diffusion", "decoder", "triangulation")
# Stages with compiled graphs in the artifacts; triangulation (marching cubes) is plain CPU code.
NEURAL_STAGES = STAGES[:3]

# Ray Serve deployment names in the rendered serveConfigV2 and in the Serve application.
DEPLOYMENT_NAMES = {
    "encoder": "Encoder",
    "diffusion": "Diffusion",
    "decoder": "Decoder",
    "triangulation": "Triangulation",
    "ingress": "BerniniIngress",
}

APPLICATION_NAME = "bernini"
APPLICATION_IMPORT_PATH = "bernini.serve.app:app_builder"

# Where the init container writes verified artifacts and the Serve replicas read them.
ARTIFACTS_MOUNT_PATH = "/mnt/bernini/artifacts"
