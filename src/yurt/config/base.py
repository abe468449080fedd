"""What every part of the configuration shares: the frozen model base and the variables read."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
)

MIB = 1024 * 1024

# Every environment variable yurt.config reads: yurt's own configuration, credentials among it.
# A runner never gets one (``yurt.backends.localproc.runner_env``).
CONFIG_ENV = frozenset(
    (
        "YURT_ADMIN_TOKEN",
        "YURT_DATA_DIR",
        "YURT_SERVER",
        "XDG_DATA_HOME",
        "CUDA_VISIBLE_DEVICES",
        "NOMAD_ADDR",
        "NOMAD_TOKEN",
        "NOMAD_NAMESPACE",
        "NOMAD_REGION",
        "NOMAD_CACERT",
        "NOMAD_CAPATH",
        "NOMAD_CLIENT_CERT",
        "NOMAD_CLIENT_KEY",
        "NOMAD_TLS_SERVER_NAME",
        "NOMAD_SKIP_VERIFY",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    )
)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
