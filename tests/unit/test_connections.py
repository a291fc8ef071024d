"""Transport security settings become the options of every Kafka, Faust, redis-py and Feast
client, through ``streams.runtime.connections`` alone; bad combinations are refused in one line;
secrets never show."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import faust
import pytest
import redis
import redis.asyncio as aioredis
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from feast.infra.online_stores.redis import RedisOnlineStore
from pydantic import SecretStr
from typer.testing import CliRunner

from features.store import redis_connection_string
from streams.cli.main import app as cli
from streams.runtime.app import create_app
from streams.runtime.brokers import BrokerChoice
from streams.runtime.connections import KafkaConnection, RedisConnection
from streams.runtime.embedded import EmbeddedRedis, EmbeddedTansu
from streams.runtime.processes import settings_env
from streams.settings import (
    KAFKA_SECURITY_FIELDS,
    REDIS_SECURITY_FIELDS,
    Settings,
    SettingsError,
    load_settings,
)
from streams.spec import load_spec
from tests.tls import Certificates, make_certificates

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "streams" / "specs" / "card_fraud.yaml"
SECRET = "s3cret-do-not-show"

#: Constructors of network clients; only streams/runtime/connections.py may call them.
CLIENT_CONSTRUCTORS = re.compile(
    r"\b(AIOKafkaProducer|AIOKafkaConsumer|AIOKafkaAdminClient|AIOKafkaClient|create_conn"
    r"|Redis|StrictRedis|RedisCluster|Sentinel|ConnectionPool|SSLConnection"
    r"|Producer|Consumer|AdminClient)\(|\bfrom_url\("
)
PRODUCTION_CODE = ("streams", "features", "models", "load_tests")


def test_no_kafka_or_redis_client_is_made_outside_streams_connections() -> None:
    """A client made elsewhere would ignore the security settings: make it through
    ``KafkaConnection`` / ``RedisConnection`` (``open_store`` takes a RedisConnection, Faust
    apps get ``broker_credentials`` in ``streams.runtime.app.create_app``)."""
    offenders = []
    for folder in PRODUCTION_CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "streams/runtime/connections.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                code = line.split("#", 1)[0]
                if CLIENT_CONSTRUCTORS.search(code) and not code.lstrip().startswith(
                    ("class ", "def ")
                ):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_constructor_pattern_finds_what_it_must() -> None:
    for line in (
        "producer = AIOKafkaProducer(bootstrap_servers=b)",
        "client = redis.Redis.from_url(url)",
        "admin = AIOKafkaAdminClient(bootstrap_servers=b)",
        "p = confluent_kafka.Producer({'bootstrap.servers': b})",
        "c = aioredis.Redis(host='x')",
    ):
        assert CLIENT_CONSTRUCTORS.search(line), line
    assert not CLIENT_CONSTRUCTORS.search("def producer(self) -> AIOKafkaProducer:")
    assert not CLIENT_CONSTRUCTORS.search("producer = EventProducer(spec, kafka)")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _sasl_ssl(certs: Certificates, **changes: object) -> Settings:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": "broker-1:9093,broker-2:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "alice",
        "kafka_sasl_password": SecretStr(SECRET),
        "kafka_ssl_cafile": certs.ca,
        "kafka_ssl_certfile": certs.client_cert,
        "kafka_ssl_keyfile": certs.client_key,
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


def test_sasl_ssl_becomes_aiokafka_options_with_a_verifying_context(certs: Certificates) -> None:
    kafka = KafkaConnection.from_settings(_sasl_ssl(certs))
    options = kafka.aiokafka_options()
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
    }
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "streamscore test CA"),),)
    ]

    async def made() -> None:  # aiokafka accepts them (it checks the combination)
        producer = kafka.producer()
        assert producer.client._security_protocol == "SASL_SSL"
        assert producer.client._sasl_plain_password == SECRET

    asyncio.run(made())


def test_faust_gets_the_same_security_as_aiokafka(certs: Certificates) -> None:
    for settings in (
        _sasl_ssl(certs),
        _sasl_ssl(certs, kafka_security_protocol="SASL_PLAINTEXT", **_no_tls()),
        _sasl_ssl(certs, kafka_security_protocol="SSL", **_no_sasl()),
        Settings(),
    ):
        kafka = KafkaConnection.from_settings(settings)
        faust_options = dict(credentials_to_aiokafka_auth(kafka.faust_credentials()))
        ours = kafka.aiokafka_options()
        assert faust_options.pop("security_protocol") == ours.pop("security_protocol")
        assert (faust_options.pop("ssl_context", None) is None) == (
            ours.pop("ssl_context", None) is None
        )
        assert faust_options == ours


def _no_tls() -> dict[str, object]:
    return {"kafka_ssl_cafile": None, "kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}


def _no_sasl() -> dict[str, object]:
    return {"kafka_sasl_mechanism": None, "kafka_sasl_username": None, "kafka_sasl_password": None}


def test_the_faust_app_is_made_with_the_credentials(certs: Certificates, tmp_path: Path) -> None:
    settings = _sasl_ssl(certs, data_dir=tmp_path)
    app = create_app(load_spec(SPEC), settings)
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert SECRET not in repr(credentials)
    assert create_app(load_spec(SPEC), Settings(data_dir=tmp_path)).conf.broker_credentials is None


def test_hostname_checking_can_be_turned_off(certs: Certificates) -> None:
    kafka = KafkaConnection.from_settings(_sasl_ssl(certs, kafka_ssl_check_hostname=False))
    context = kafka.ssl_context()
    assert context is not None and not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate is still verified


def test_plaintext_adds_nothing() -> None:
    assert KafkaConnection.from_settings(Settings()).aiokafka_options() == {
        "security_protocol": "PLAINTEXT"
    }
    assert KafkaConnection("b:9092").faust_credentials() is None


def test_redis_tls_and_password_reach_redis_py_both_clients(certs: Certificates) -> None:
    settings = Settings(
        redis_url="redis://cache:6380/2",
        redis_password=SecretStr(SECRET),
        redis_tls=True,
        redis_ssl_ca_certs=certs.ca,
        redis_ssl_certfile=certs.client_cert,
        redis_ssl_keyfile=certs.client_key,
    )
    connection = RedisConnection.from_settings(settings)
    for client, tls_class in (
        (connection.client(), redis.SSLConnection),
        (connection.async_client(), aioredis.SSLConnection),
    ):
        pool = client.connection_pool
        assert pool.connection_class is tls_class
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache", 6380, 2)
        assert kwargs["password"] == SECRET
        assert kwargs["ssl_ca_certs"] == str(certs.ca)
        assert kwargs["ssl_certfile"] == str(certs.client_cert)
        assert kwargs["ssl_keyfile"] == str(certs.client_key)


def test_plain_redis_stays_plain() -> None:
    pool = RedisConnection.from_settings(Settings()).client().connection_pool
    assert pool.connection_class is redis.Connection
    assert pool.connection_kwargs.get("password") is None


def test_feast_gets_the_same_redis_options(certs: Certificates) -> None:
    connection = RedisConnection(
        "redis://cache:6380/2", SecretStr("12345"), tls=True, ssl_ca_certs=certs.ca
    )
    string = redis_connection_string(connection.url, connection.feast_options())
    nodes, kwargs = RedisOnlineStore._parse_connection_string(string)
    assert nodes == [{"host": "cache", "port": "6380"}]
    # A numeric password stays a string; ssl is a boolean for redis-py.
    assert kwargs == {"db": 2, "password": "12345", "ssl": True, "ssl_ca_certs": str(certs.ca)}


def test_a_rediss_url_alone_means_tls() -> None:
    connection = RedisConnection("rediss://:pw@cache:6380/0")
    assert connection.uses_tls
    assert connection.client().connection_pool.connection_class is redis.SSLConnection
    assert connection.feast_options() == []  # the URL's scheme already says ssl=true


def test_no_repr_or_message_shows_a_secret(certs: Certificates) -> None:
    settings = _sasl_ssl(certs, redis_password=SecretStr(SECRET))
    kafka = KafkaConnection.from_settings(settings)
    shown = [
        repr(settings),
        str(settings),
        repr(kafka),
        kafka.describe(),
        repr(RedisConnection.from_settings(settings)),
        RedisConnection.from_settings(settings).describe(),
        repr(RedisConnection(f"redis://:{SECRET}@cache:6379/0")),
        RedisConnection(f"redis://:{SECRET}@cache:6379/0").describe(),
    ]
    for text in shown:
        assert SECRET not in text, text
    assert kafka.describe() == "broker-1:9093,broker-2:9093 (SASL_SSL, SCRAM-SHA-512 as 'alice')"


def test_child_processes_get_the_secrets_they_need(certs: Certificates) -> None:
    env = settings_env(_sasl_ssl(certs, redis_password=SecretStr("r-" + SECRET)))
    assert env["STREAMSCORE_KAFKA_SASL_PASSWORD"] == SECRET
    assert env["STREAMSCORE_REDIS_PASSWORD"] == "r-" + SECRET
    assert env["STREAMSCORE_KAFKA_SSL_CAFILE"] == str(certs.ca)


def test_embedded_servers_reset_the_security_their_clients_use(certs: Certificates) -> None:
    """They listen in the clear: a secured environment must not leak into the demo's."""
    secured = _sasl_ssl(certs, redis_password=SecretStr(SECRET), redis_tls=True)
    kafka = BrokerChoice(EmbeddedTansu(port=1), "").client_settings(secured)
    assert KafkaConnection.from_settings(kafka).aiokafka_options() == {
        "security_protocol": "PLAINTEXT"
    }
    plain = EmbeddedRedis(port=2).client_settings(secured)
    assert RedisConnection.from_settings(plain).redis_py_options() == {}
    assert not RedisConnection.from_settings(plain).uses_tls
    with_password = EmbeddedRedis(port=2, password="pw").client_settings(secured)
    assert RedisConnection.from_settings(with_password).redis_py_options() == {"password": "pw"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"STREAMSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "STREAMSCORE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs STREAMSCORE_KAFKA_SASL_MECHANISM,"
            " STREAMSCORE_KAFKA_SASL_USERNAME, STREAMSCORE_KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "STREAMSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "STREAMSCORE_KAFKA_SASL_MECHANISM": "PLAIN",
                "STREAMSCORE_KAFKA_SASL_USERNAME": "alice",
            },
            "STREAMSCORE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs"
            " STREAMSCORE_KAFKA_SASL_PASSWORD",
        ),
        (
            {"STREAMSCORE_KAFKA_SASL_USERNAME": "alice", "STREAMSCORE_KAFKA_SASL_PASSWORD": SECRET},
            "STREAMSCORE_KAFKA_SASL_USERNAME, STREAMSCORE_KAFKA_SASL_PASSWORD set, but"
            " STREAMSCORE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL",
        ),
        (
            {"STREAMSCORE_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "STREAMSCORE_KAFKA_SSL_CAFILE='/no/such/ca.pem': no such file: /no/such/ca.pem",
        ),
        (
            {"STREAMSCORE_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "STREAMSCORE_KAFKA_SECURITY_PROTOCOL='TLS': Input should be 'PLAINTEXT', 'SSL',"
            " 'SASL_PLAINTEXT' or 'SASL_SSL'",
        ),
        (
            {
                "STREAMSCORE_REDIS_URL": f"redis://:{SECRET}@cache:6379/0",
                "STREAMSCORE_REDIS_PASSWORD": SECRET,
            },
            "a Redis password is set twice",
        ),  # fmt: skip
        (
            {"STREAMSCORE_REDIS_SSL_CA_CERTS": str(SPEC), "STREAMSCORE_REDIS_PASSWORD": SECRET},
            "STREAMSCORE_REDIS_SSL_CA_CERTS set, but Redis is not on TLS",
        ),
    ],
    ids=[
        "sasl-without-credentials",
        "sasl-without-password",
        "credentials-without-sasl",
        "missing-ca-file",
        "unknown-protocol",
        "two-redis-passwords",
        "redis-ca-without-tls",
    ],
)
def test_bad_security_settings_are_one_clear_line(
    env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("invalid settings: ") and "\n" not in message
    assert says in message
    assert SECRET not in message


def test_a_worker_refuses_to_start_on_bad_security_settings() -> None:
    result = CliRunner().invoke(
        cli,
        ["worker", "--spec", str(SPEC)],
        env={"STREAMSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
    )
    assert result.exit_code == 2
    assert "STREAMSCORE_KAFKA_SASL_USERNAME" in result.output


def test_readme_and_compose_name_real_security_settings_and_every_one_of_them() -> None:
    pattern = r"STREAMSCORE_((?:KAFKA_(?:SECURITY|SASL|SSL)|REDIS)_[A-Z_]*[A-Z])"
    readme = (ROOT / "README.md").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    named = {name.lower() for name in re.findall(pattern, readme + compose)}
    assert named - set(Settings.model_fields) == set()
    assert set(KAFKA_SECURITY_FIELDS + REDIS_SECURITY_FIELDS) - named <= {
        "kafka_sasl_password",  # in the table as `_PASSWORD` after the username
        "kafka_ssl_keyfile",
        "redis_ssl_keyfile",
    }
