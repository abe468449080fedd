"""Typed configuration: the models of ``yurt run`` and ``yurt server``, and how they are read.

One module per part (``local``, ``router``, ``tls``, ``cluster``, ``server``); ``environ`` reads
the file, the environment and the flags, and is the only module of yurt that reads environment
variables. Every check of a value lives in the models, so a TOML file, a flag and a test that
builds a model directly meet the same rules.
"""

from __future__ import annotations

from yurt.config.base import CONFIG_ENV, MIB, base_url, url_segment
from yurt.config.cluster import ConsulConfig, NomadConfig, VolumeConfig
from yurt.config.environ import (
    admin_token_env,
    build_server_config,
    consul_env,
    default_data_dir,
    go_bool,
    local_env,
    merged,
    nomad_env,
    read_config_file,
    s3_env,
    server_url_env,
)
from yurt.config.local import BackoffConfig, HealthConfig, LocalBackendConfig, SchedulerConfig
from yurt.config.router import MAX_ATTEMPTS, KeysConfig, QueueConfig, RouterConfig, WebhookConfig
from yurt.config.server import EnvsConfig, FilesConfig, MachineOverride, S3Config, ServerConfig
from yurt.config.tls import TLS_ENV, ClusterTLS, tls_failure

__all__ = [
    "CONFIG_ENV",
    "MAX_ATTEMPTS",
    "MIB",
    "TLS_ENV",
    "BackoffConfig",
    "ClusterTLS",
    "ConsulConfig",
    "EnvsConfig",
    "FilesConfig",
    "HealthConfig",
    "KeysConfig",
    "LocalBackendConfig",
    "MachineOverride",
    "NomadConfig",
    "QueueConfig",
    "RouterConfig",
    "S3Config",
    "SchedulerConfig",
    "ServerConfig",
    "VolumeConfig",
    "WebhookConfig",
    "admin_token_env",
    "base_url",
    "build_server_config",
    "consul_env",
    "default_data_dir",
    "go_bool",
    "local_env",
    "merged",
    "nomad_env",
    "read_config_file",
    "s3_env",
    "server_url_env",
    "tls_failure",
    "url_segment",
]
