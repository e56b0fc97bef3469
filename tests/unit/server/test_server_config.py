"""ServerConfig from defaults, a YAML file, BERTSERVE_* environment and flags; feature helpers."""

from __future__ import annotations

import pytest
from bertserve.server.config import DEFAULT_PORT, BatchSettings, load_config


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    config_file = tmp_path / "server.yaml"
    config_file.write_text(
        "host: 0.0.0.0\nport: 6000\ninstances: 2\n"
        "batch:\n  max_batch_tokens: 4096\n  max_queue_delay_ms: 5\n"
        "models:\n  minilm:\n    max_batch_size: 16\n"
    )
    environ = {
        "BERTSERVE_PORT": "7000",
        "BERTSERVE_METRICS_PORT": "9090",
        "BERTSERVE_REPO": str(tmp_path),
    }
    config = load_config({"port": 8000, "host": None}, config_file, environ)
    assert config.port == 8000 and config.host == "0.0.0.0" and config.instances == 2
    assert config.metrics_port == 9090 and config.repo == tmp_path
    assert config.batch == BatchSettings(max_batch_tokens=4096, max_queue_delay_ms=5)
    minilm = config.batch_settings("minilm")
    assert (minilm.max_batch_size, minilm.max_batch_tokens) == (
        16,
        4096,
    )  # inherits the file's batch
    assert config.batch_settings("other") == config.batch
    defaults = load_config({"repo": tmp_path}, None, {})
    assert (defaults.port, defaults.host, defaults.device, defaults.metrics_port) == (
        DEFAULT_PORT,
        "127.0.0.1",
        "cpu",
        None,
    )


@pytest.mark.parametrize(
    "flags, environ, yaml_text, message",
    [
        ({}, {}, None, "no model repository"),
        ({"device": "tpu"}, {}, None, "device='tpu': allowed cpu, cuda"),
        ({"port": 70000}, {}, None, "port=70000"),
        ({}, {"BERTSERVE_PORT": "http"}, None, "BERTSERVE_PORT='http'"),
        ({}, {}, "batch:\n  max_batch_size: 0\n", "batch.max_batch_size=0"),
        ({}, {}, "batch:\n  max_batch: 3\n", "unknown keys ['max_batch']"),
        ({}, {}, "prot: 5\n", "unknown keys ['prot']"),
        ({"max_concurrent_rpcs": 0}, {}, None, "max_concurrent_rpcs=0: must be at least 1"),
        ({"max_answer_bytes": 2**30}, {}, None, "one answer must fit in a stream's buffer"),
        ({}, {"BERTSERVE_MAX_CONNECTION_AGE": "-1"}, None, "max_connection_age_s=-1.0"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, flags, environ, yaml_text, message):
    config_file = None
    if yaml_text is not None:
        config_file = tmp_path / "server.yaml"
        config_file.write_text(yaml_text)
    if "no model repository" not in message:
        flags = {"repo": tmp_path, **flags}
    with pytest.raises(ValueError) as error:
        load_config(flags, config_file, environ)
    assert message in str(error.value)


def test_default_variants_come_from_flags_environment_or_file(tmp_path):
    config_file = tmp_path / "server.yaml"
    config_file.write_text("variants:\n  minilm: fp32\n")
    assert load_config({"repo": tmp_path}, config_file, {}).variants == {"minilm": "fp32"}
    environ = {"BERTSERVE_VARIANTS": "minilm=int8, other=fp32-opt"}
    from_env = load_config({"repo": tmp_path}, config_file, environ)
    assert from_env.variants == {"minilm": "int8", "other": "fp32-opt"}
    flags = {"repo": tmp_path, "variants": ["minilm=fp32-opt", "other=int8"]}
    assert load_config(flags, None, environ).variants == {"minilm": "fp32-opt", "other": "int8"}
    with pytest.raises(ValueError, match="expected MODEL=VARIANT"):
        load_config({"repo": tmp_path, "variants": ["minilm"]}, None, {})


def serve_flags(*argv: str) -> dict:
    """The settings `bertserve serve ARGV` hands to load_config, parsed by the real parser."""
    import argparse

    from bertserve.server import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return cli.flag_values(parser.parse_args(["serve", *argv]))


def test_global_batch_flags_and_environment_never_override_a_models_own_yaml(tmp_path):
    config_file = tmp_path / "server.yaml"
    config_file.write_text(
        "batch:\n  max_batch_size: 8\n  max_batch_tokens: 1000\n"
        "models:\n  minilm:\n    max_batch_size: 16\n"
    )
    environ = {"BERTSERVE_MAX_BATCH_TOKENS": "2000", "BERTSERVE_MAX_QUEUE_DELAY_MS": "7"}
    flags = serve_flags("--repo", str(tmp_path), "--max-batch-size", "32")
    config = load_config(flags, config_file, environ)
    # the global batch: flag > environment > YAML > default
    assert config.batch == BatchSettings(
        max_batch_size=32, max_batch_tokens=2000, max_queue_delay_ms=7
    )
    # the model's own key stays; its others follow the global batch
    minilm = config.batch_settings("minilm")
    assert minilm == BatchSettings(max_batch_size=16, max_batch_tokens=2000, max_queue_delay_ms=7)


def test_every_flag_and_environment_variable_reaches_its_setting(tmp_path):
    from bertserve.server.config import ServerConfig, env_name, flag_name, settings

    (tmp_path / "cert.pem").write_text("x")
    values = {
        "repo": str(tmp_path),
        "host": "0.0.0.0",
        "metrics_host": "0.0.0.0",
        "device": "cuda",
        "default_model": "other",
        "variants": "minilm=int8",
        "log_level": "DEBUG",
        "allowed_variants": "fp32,int8",
        "tls_cert": str(tmp_path / "cert.pem"),
        "tls_key": str(tmp_path / "cert.pem"),
        "tls_client_ca": str(tmp_path / "cert.pem"),
        "auth_token_file": str(tmp_path / "cert.pem"),
        "port_file": str(tmp_path / "port"),
        "max_answer_bytes": "1000",
        "unary_reserved_rpcs": "3",
    }
    fields = list(settings())
    for field in fields:
        if field.name not in values:
            default = field.default
            if isinstance(default, bool):
                values[field.name] = str(not default).lower()
            elif isinstance(default, (int, float)) and default:
                values[field.name] = str(default + 7)
            else:  # None or 0: a small number
                values[field.name] = "5"
    environ = {env_name(f): values[f.name] for f in fields if env_name(f)}
    from_env = load_config({}, None, environ)
    argv = []
    for field in fields:
        flag = flag_name(field)
        if isinstance(field.default, bool):
            argv.append(flag if values[field.name] == "true" else f"--no-{flag[2:]}")
        else:
            argv += [flag, values[field.name]]
    from_flags = load_config(serve_flags(*argv), None, {})
    assert from_env == from_flags
    defaults = ServerConfig(repo=tmp_path)
    unchanged = [
        f.name
        for f in fields
        if f.name != "repo"
        and hasattr(defaults, f.name)
        and getattr(from_env, f.name) == getattr(defaults, f.name)
        or f.name in BatchSettings.__dataclass_fields__
        and getattr(from_env.batch, f.name) == getattr(defaults.batch, f.name)
    ]
    assert unchanged == [], "settings that no flag or variable reached"
    assert from_env.repo == tmp_path and from_env.variants == {"minilm": "int8"}
    assert from_env.allowed_variants == ("fp32", "int8")


def test_the_readme_settings_table_is_generated_from_the_declarations():
    from pathlib import Path

    from bertserve.server.config_load import markdown_table

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table.strip() == markdown_table().strip(), (
        "README's settings table is stale: python -m bertserve.server.config --markdown"
    )


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("models:\n  minilm:\n    max_batch: 3\n", "models.minilm: unknown keys ['max_batch']"),
        ("port: http\n", "port='http': not a valid port"),
        ("batch: 5\n", "batch: expected a mapping"),
        ("warmup: maybe\n", "warmup='maybe'"),
    ],
)
def test_bad_yaml_is_a_clear_startup_error(tmp_path, yaml_text, message):
    config_file = tmp_path / "server.yaml"
    config_file.write_text(yaml_text)
    with pytest.raises(ValueError) as error:
        load_config({"repo": tmp_path}, config_file, {})
    assert message in str(error.value)


def test_the_serve_command_refuses_an_unknown_yaml_key_at_startup(tmp_path):
    import subprocess
    import sys

    config_file = tmp_path / "server.yaml"
    config_file.write_text("max_concurent_rpcs: 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", str(tmp_path)]
        + ["--config", str(config_file)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown keys ['max_concurent_rpcs']" in done.stderr


def test_the_readme_yaml_example_loads(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    example = readme.split("```yaml\nport: 50051", 1)[1].split("```", 1)[0]
    config_file = tmp_path / "server.yaml"
    config_file.write_text("port: 50051" + example)
    config = load_config({"repo": tmp_path}, config_file, {})
    assert config.batch_settings("minilm").max_batch_tokens == 16384
