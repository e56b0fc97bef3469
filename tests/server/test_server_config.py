"""ServerConfig from defaults, a YAML file, BERTSERVE_* environment and flags; feature helpers."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.server.config import DEFAULT_PORT, BatchSettings, load_config
from bertserve.server.features import from_bfloat16_bits, to_bfloat16_bits


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


def test_bfloat16_rounds_to_nearest_and_keeps_specials():
    values = np.array(
        [1.0, -2.5, 3.14159265, 1e-30, np.inf, -np.inf, 65504.0, 1 + 2**-8 + 2**-10], np.float32
    )
    back = from_bfloat16_bits(to_bfloat16_bits(values))
    np.testing.assert_allclose(back[np.isfinite(values)], values[np.isfinite(values)], rtol=2**-8)
    assert back[4] == np.inf and back[5] == -np.inf
    assert back[7] == np.float32(1 + 2**-7)  # rounded up, not truncated
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(np.array([np.nan], np.float32))))[0]


def test_the_cli_module_is_light_and_the_server_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, bertserve.server.cli\n"
        "assert 'onnxruntime' not in sys.modules and 'grpc_health' not in sys.modules\n"
        "import bertserve.server.app, bertserve.server.v1.servicer\n"
        "heavy = {'torch', 'transformers', 'optimum'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr


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
