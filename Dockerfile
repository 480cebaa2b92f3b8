# The pullcheck webhook image: Python 3.11 slim, the package and its dependencies only, non-root.
# Build: docker build -t ghcr.io/pullcheck/pullcheck:0.1.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN python -m venv /opt/pullcheck \
 && /opt/pullcheck/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/pullcheck/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# 65532 is the chart's runAsUser; no shell login, no home to write to.
RUN groupadd --gid 65532 pullcheck && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin pullcheck
COPY --from=build /opt/pullcheck /opt/pullcheck
ENV PATH=/opt/pullcheck/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["pullcheck"]
CMD ["serve", "--host=0.0.0.0", "--port=8443"]
