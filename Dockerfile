# One image for every zapreply process; docker-compose.yml picks the command:
#   webhook receiver  gunicorn 'webhook_app:create_app()'   (the default CMD)
#   worker            celery -A worker worker
#   Flower            celery -A worker flower
#   schema            alembic upgrade head
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# litellm would otherwise download its price map at import (and retry for seconds offline).
ENV LITELLM_LOCAL_MODEL_COST_MAP=True

# Every entry point (gunicorn, celery, alembic and the `zapreply` console script) imports the
# code from /app, so zapreply.cli finds /app/alembic.ini beside it. The settings default data
# dir is ./var: pin it to the one folder the app user may write.
ENV PYTHONPATH=/app \
    ZAPREPLY_DATA_DIR=/app/var

# gunicorn.conf.py reads WEB_CONCURRENCY as the receiver's worker count; GUNICORN_CMD_ARGS=
# "--workers N" or a --workers flag override it.
ENV WEB_CONCURRENCY=2

# Unprivileged user with a writable home: recent gunicorn puts its control socket in
# ~/.gunicorn and logs an error at start when it cannot.
RUN groupadd --system --gid 10001 zapreply \
    && useradd --system --uid 10001 --gid zapreply --create-home --home-dir /home/zapreply \
       --shell /usr/sbin/nologin zapreply

WORKDIR /app

# Dependencies first, from the runtime lock alone (every version pinned, every file's hash
# checked), so a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# (README.md is optional: pyproject.toml names it as the long description.)
COPY pyproject.toml README.md* alembic.ini gunicorn.conf.py ./
COPY migrations/ migrations/
COPY zapreply/ zapreply/
COPY webhook_app/ webhook_app/
COPY admin_api/ admin_api/
COPY worker/ worker/

# The project itself (console script `zapreply`, metadata) without dependencies: the lock met
# them, and `pip check` fails the build if pyproject.toml asks for one the lock lacks.
# Byte-compile /app as root, since the app user cannot write __pycache__ there.
RUN pip install --no-deps . \
    && pip check \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q zapreply webhook_app admin_api worker migrations \
    && mkdir -p /app/var \
    && chown zapreply:zapreply /app/var

ENV HOME=/home/zapreply
USER 10001:10001

EXPOSE 8000

# gunicorn.conf.py in /app (the working directory) sets the worker class, threads, timeouts,
# header limits, the bind (0.0.0.0:8000) and the heartbeat file in /dev/shm; the worker count
# comes from WEB_CONCURRENCY (above) and any other gunicorn flag from GUNICORN_CMD_ARGS
# (e.g. "--access-logfile -").
CMD ["gunicorn", "webhook_app:create_app()"]
