# Worker/runtime image: the project installed exactly as scripts/install.sh does on a machine.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
# On a machine without the local CPU wheel, take torch's CPU build from its own index.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir --no-deps -r requirements.lock \
 && pip install --no-cache-dir --no-deps -e .
ENV PREFECT_SERVER_ANALYTICS_ENABLED=false LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false DISTILL_DATA_DIR=/data
VOLUME /data
