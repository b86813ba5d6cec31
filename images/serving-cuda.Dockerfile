# The Ray worker/head image for accelerator kind nvidia: PyTorch's CUDA runtime image plus Ray Serve and this
# package. Its CUDA version is the one to declare in spec.runtime.cudaVersion: artifacts traced with a newer
# CUDA major are refused before rollout. Build from the repository root:
#   docker build -f images/serving-cuda.Dockerfile -t bernini-serving-cuda:1.4.0 .
ARG PYTORCH_CUDA=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime
FROM ${PYTORCH_CUDA}
LABEL dev.bernini.cuda-version="12.8"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# torch comes with the base image (its CUDA build); install everything else of the serve extra around it.
RUN pip install --no-cache-dir "ray[serve]>=2.60,<2.61" "scikit-image>=0.24,<1" "trimesh>=4,<6" "pillow>=10" \
 && pip install --no-cache-dir --no-deps . && rm -rf /src
# uid 1000 / gid 100 as the pod templates' securityContext expects (Ray images use the same).
RUN id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --gid 100 --create-home ray
USER 1000:100
# KubeRay supplies the container command (ray start ...); the init container runs `bernini artifacts pull`.
