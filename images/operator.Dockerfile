# The operator: kopf, kubernetes, pydantic, boto3 only (no torch, no ray). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t bernini-operator:0.1.0 .
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
# Numeric user so the chart's runAsNonRoot can be verified; the chart mounts /tmp, the root fs is read-only.
USER 65532:65532
ENTRYPOINT ["bernini"]
CMD ["operator"]
