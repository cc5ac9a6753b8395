from pipeline.cli import find_user_error, main
from pipeline.errors import DataError


def test_config_errors_are_one_line_and_exit_2(capsys):
    assert main(["run", "image", "--set", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.bogus: unknown key") and err.count("\n") == 1


def test_bad_override_syntax(capsys):
    assert main(["data", "image", "--set", "novalue"]) == 2
    assert "section.key=value" in capsys.readouterr().err


def test_predict_without_production_model(tmp_path, capsys):
    assert main(["predict", "image", "--registry", str(tmp_path), "--input", '{"pixels": [0]}']) == 2
    assert "no production model" in capsys.readouterr().err


def test_user_errors_are_found_inside_wrapped_exceptions():
    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("long remote traceback")
            self.cause = cause

    original = DataError("input not found: x.csv")
    assert find_user_error(Wrapper(original)) is original
    try:
        try:
            raise original
        except DataError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as exc:
        assert find_user_error(exc) is original
    assert find_user_error(ValueError("bug")) is None


def test_a_run_id_that_leaves_the_registry_is_refused(tmp_path, capsys):
    assert main(["run", "image", "--run-id", "../..", "--registry", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid run id '../..'") and err.count("\n") == 1
    assert main(["registry", "promote", "image", "../../text/runs/X", "--registry", str(tmp_path)]) == 2
    assert "invalid run id" in capsys.readouterr().err
