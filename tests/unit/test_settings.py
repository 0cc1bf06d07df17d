import pytest

from celrec.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_all_in_one(monkeypatch):
    for var in ("CELREC_EVENT_LOG", "CELREC_STATE_STORE", "CELREC_PORT"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    assert (settings.event_log, settings.state_store) == ("embedded", "embedded")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.kafka_api_version_tuple is None


def test_environment_is_read_with_prefix(monkeypatch):
    monkeypatch.setenv("CELREC_EVENT_LOG", "kafka")
    monkeypatch.setenv("CELREC_KAFKA_API_VERSION", "0.9")
    monkeypatch.setenv("CELREC_BATCH_MAX_EVENTS", "64")
    settings = load_settings()
    assert settings.event_log == "kafka"
    assert settings.kafka_api_version_tuple == (0, 9)
    assert settings.batch_max_events == 64


def test_the_row_step_follows_the_objective_unless_set(monkeypatch):
    """Squared loss on ratings takes a smaller row step than log loss on clicks; an explicit
    CELREC_LEARNING_RATE wins for both, and it is what the trainer's learner uses."""
    from trainer.cel_learner import CELLearner

    monkeypatch.delenv("CELREC_LEARNING_RATE", raising=False)
    monkeypatch.setenv("CELREC_OBJECTIVE", "rating")
    rating = load_settings(device="cpu")
    assert rating.row_learning_rate == 0.03
    assert CELLearner(rating).model.config.lr == 0.03
    monkeypatch.setenv("CELREC_OBJECTIVE", "click")
    assert load_settings().row_learning_rate == 0.1
    monkeypatch.setenv("CELREC_LEARNING_RATE", "0.5")
    for objective in ("click", "rating"):
        monkeypatch.setenv("CELREC_OBJECTIVE", objective)
        assert load_settings().row_learning_rate == 0.5


@pytest.mark.parametrize(
    "var, value",
    [
        ("CELREC_EVENT_LOG", "rabbitmq"),
        ("CELREC_KAFKA_API_VERSION", "zero.nine"),
        ("CELREC_BATCH_MAX_EVENTS", "0"),
        ("CELREC_PORT", "http"),
        ("CELREC_DEVICE", "tpu"),
        ("CELREC_STATE_PREFIX", "has space"),
    ],
)
def test_bad_values_fail_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert var in str(info.value)


def test_the_settings_reference_documents_every_setting_with_its_default():
    import subprocess
    import sys
    from pathlib import Path

    from celrec.settings import Settings

    root = Path(__file__).resolve().parents[2]
    reference = (root / "docs" / "settings.md").read_text()
    missing = [f"CELREC_{name.upper()}" for name in Settings.model_fields
               if f"`CELREC_{name.upper()}`" not in reference]
    assert missing == []
    # the table is the generator's output, so defaults and meanings are current
    table = subprocess.run([sys.executable, str(root / "scripts" / "settings_table.py")],
                           capture_output=True, text=True, check=True, cwd=root).stdout
    assert table.strip() in reference
    preset = subprocess.run([sys.executable, str(root / "scripts" / "settings_table.py"),
                             "--preset"], capture_output=True, text=True, check=True,
                            cwd=root).stdout
    assert preset.strip() in reference  # the evaluation preset's fields, as declared
