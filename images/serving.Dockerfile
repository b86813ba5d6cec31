# The Ray worker/head image: the AWS Neuron PyTorch inference DLC (torch-neuronx, neuronx-cc, Neuron
# runtime) plus Ray Serve and this package. Pick the DLC whose neuronx-cc matches the artifacts' compiler
# major and set spec.runtime.neuronCompilerVersion to it. Build from the repository root:
#   docker build -f images/serving.Dockerfile -t bernini-serving:1.4.0 .
ARG NEURON_DLC=public.ecr.aws/neuron/pytorch-inference-neuronx:2.9.0-neuronx-py311-sdk2.27.0-ubuntu22.04
FROM ${NEURON_DLC}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# torch comes with the DLC (its Neuron build); install everything else of the serve extra around it.
RUN pip install --no-cache-dir "ray[serve]>=2.60,<2.61" "scikit-image>=0.24,<1" "trimesh>=4,<6" "pillow>=10" \
 && pip install --no-cache-dir --no-deps . && rm -rf /src
# uid 1000 / gid 100 as the pod templates' securityContext expects (Ray images use the same).
RUN id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --gid 100 --create-home ray
USER 1000:100
# KubeRay supplies the container command (ray start ...); the init container runs `bernini artifacts pull`.
