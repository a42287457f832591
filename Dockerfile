# bonecls app image (Azure Web App for Containers, any Docker host).
# The install steps are scripts/setup.sh, the same script the README and CI run.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BONECLS_TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    BONECLS_VENV=/opt/venv \
    BONECLS_CACHE=/home/app/.cache/bonecls \
    YOLO_OFFLINE=1 \
    ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1 \
    PATH=/opt/venv/bin:$PATH

RUN useradd --create-home --uid 1000 app
WORKDIR /app
COPY requirements.txt requirements-train.txt requirements-dev.txt pyproject.toml README.md ./
COPY scripts/setup.sh scripts/setup.sh
COPY bonecls bonecls
RUN bash scripts/setup.sh && rm -rf /root/.cache/pip
COPY --chown=app:app . .

USER app
# Azure Web App sets WEBSITES_PORT (and PORT); default 8501.
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os,urllib.request; p=os.environ.get('WEBSITES_PORT') or os.environ.get('PORT') or '8501'; urllib.request.urlopen(f'http://127.0.0.1:{p}/_stcore/health', timeout=4)"
# bonecls.serve = `streamlit run app.py` with the models loading from server start (bonecls/serve.py)
CMD ["sh", "-c", "exec python -m bonecls.serve --server.address=0.0.0.0 --server.port=${WEBSITES_PORT:-${PORT:-8501}} --server.headless=true"]
