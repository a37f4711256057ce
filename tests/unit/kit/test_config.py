import pytest

from services.kit.config import ConfigError, ServiceSettings, load_settings


def test_defaults_follow_the_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZT_DATABASE_URL", raising=False)
    monkeypatch.delenv("ZT_GRPC_PORT", raising=False)
    settings = load_settings(ServiceSettings, service_name="customer")
    assert settings.grpc_port == 50051
    assert settings.database_url == "sqlite+aiosqlite:///var/customer.db"
    assert settings.kafka_client_id == "zhongtai-customer"


def test_environment_overrides_with_the_zt_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZT_GRPC_PORT", "6001")
    monkeypatch.setenv("ZT_LOG_LEVEL", "debug")
    settings = load_settings(ServiceSettings, service_name="product")
    assert settings.grpc_port == 6001
    assert settings.log_level == "DEBUG"


def test_each_bad_value_is_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZT_GRPC_PORT", "70000")
    monkeypatch.setenv("ZT_KAFKA_TOPIC_PARTITIONS", "zero")
    monkeypatch.setenv("ZT_AUTH_HS256_SECRET", "short")
    with pytest.raises(ConfigError):
        load_settings(ServiceSettings, service_name="customer")
    err = capsys.readouterr().err
    assert "ZT_GRPC_PORT" in err
    assert "ZT_KAFKA_TOPIC_PARTITIONS" in err
    assert "ZT_AUTH_HS256_SECRET" in err
    assert "short" not in err  # the bad secret itself is not echoed


def test_prod_refuses_hs256_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZT_ENVIRONMENT", "prod")
    monkeypatch.delenv("ZT_AUTH_JWKS_FILE", raising=False)
    with pytest.raises(ConfigError):
        load_settings(ServiceSettings, service_name="customer")
    assert "ZT_AUTH_JWKS_FILE" in capsys.readouterr().err
