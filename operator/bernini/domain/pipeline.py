"""The Bernini pipeline's fixed shape, shared by the renderer, the Serve application and the compile tool."""

# Order matters: each stage feeds the next.
STAGES = ("encoder", "diffusion", "decoder", "triangulation")
# Stages with compiled graphs in the artifacts; triangulation (marching cubes) is plain CPU code.
NEURAL_STAGES = STAGES[:3]

# How the neural stages map onto Serve deployments: fused runs the three in one replica, in-process; staged
# gives each its own deployment (and its own accelerator share, scaling and batching).
LAYOUTS = ("fused", "staged")
FUSED = "fused"

# Ray Serve deployment names in the rendered serveConfigV2 and in the Serve application.
DEPLOYMENT_NAMES = {
    "encoder": "Encoder",
    "diffusion": "Diffusion",
    "decoder": "Decoder",
    FUSED: "FusedStages",
    "triangulation": "Triangulation",
    "ingress": "BerniniIngress",
}

# The compiled stages each deployment loads: these need the artifacts on their worker pods.
GRAPHS_OF_DEPLOYMENT = {**{stage: (stage,) for stage in NEURAL_STAGES}, FUSED: NEURAL_STAGES}


def deployments_of_layout(layout: str) -> tuple[str, ...]:
    """The Serve deployments of a layout, in pipeline order, the ingress last."""
    neural = (FUSED,) if layout == FUSED else NEURAL_STAGES
    return (*neural, "triangulation", "ingress")

APPLICATION_NAME = "bernini"
APPLICATION_IMPORT_PATH = "bernini.serve.app:app_builder"

# Where the init container writes verified artifacts and the Serve replicas read them.
ARTIFACTS_MOUNT_PATH = "/mnt/bernini/artifacts"
