"""`bench --peers` measures the model it is told to, never "the first by name"."""

from bertserve.client.cli import main


def test_peers_without_model_on_two_models_refuses_naming_them(tmp_path, capsys) -> None:
    for name in ("minilm", "minilm-sentiment"):
        (tmp_path / name / "fp32-opt").mkdir(parents=True)
        (tmp_path / name / "fp32-opt" / "manifest.json").write_text("{}")
    assert main(["bench", "--peers", "--quick", "--repo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 models (minilm, minilm-sentiment); name the one to measure with --model" in err
