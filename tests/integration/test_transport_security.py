"""Transport security end to end: a real ``streamscore worker`` on Apache Kafka's SASL_SSL
listener (SCRAM-SHA-512 over TLS, a test CA, TLS client certificates required) and on a
Redis that requires a password; wrong credentials are refused in one line that says why and
shows no secret.

The session's broker and Redis are not used: this module starts its own (a SASL_SSL listener
next to the PLAINTEXT one the broker's readiness check uses; the worker is only told the
SASL_SSL address)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest
from pydantic import SecretStr

from streams.cli.producer import EventProducer
from streams.runtime.apache_kafka import ApacheKafka, check_java
from streams.runtime.connections import ConnectionFailed, KafkaConnection, RedisConnection
from streams.runtime.embedded import EmbeddedRedis
from streams.runtime.processes import WorkerProcess
from streams.scoring.prediction_store import Keys
from streams.settings import Settings
from streams.spec import PipelineSpec
from tests.conftest import CARD_FRAUD_SPEC
from tests.integration.harness import PreparedPipeline, consume, create_topics, start_worker
from tests.tls import Certificates, make_certificates

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not check_java(Settings().cache_dir).usable,
        reason=f"Apache Kafka cannot run here: {check_java(Settings().cache_dir).why_not}",
    ),
]

USER = "alice"
PASSWORD = f"kafka-{uuid.uuid4().hex}"
REDIS_PASSWORD = f"redis-{uuid.uuid4().hex}"
EVENTS = 60
LISTENER = "SECURED"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secured_kafka(certs: Certificates) -> Iterator[ApacheKafka]:
    """SASL_SSL with SCRAM-SHA-512: the server's certificate and key inline as PEM, the
    test CA trusted for client certificates (required), user alice created at format time."""
    on = f"listener.name.{LISTENER.lower()}."
    properties = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        f"{on}scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        f"{on}ssl.keystore.type": "PEM",
        f"{on}ssl.keystore.certificate.chain": certs.server_cert.read_text().strip(),
        f"{on}ssl.keystore.key": certs.server_key.read_text().strip(),
        f"{on}ssl.truststore.type": "PEM",
        f"{on}ssl.truststore.certificates": certs.ca.read_text().strip(),
        f"{on}ssl.client.auth": "required",
    }
    scram = f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"
    with ApacheKafka(
        Settings().cache_dir,
        extra_properties=properties,
        extra_listeners={LISTENER: "SASL_SSL"},
        format_arguments=["--add-scram", scram],
    ) as broker:
        yield broker


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(password=REDIS_PASSWORD) as redis:
        yield redis


@pytest.fixture(scope="module")
def secured(
    secured_kafka: ApacheKafka,
    secured_redis: EmbeddedRedis,
    certs: Certificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> PreparedPipeline:
    """The demo pipeline prepared against the secured servers: Feast applies and
    materializes into the password-protected Redis; models trained into a temp registry."""
    root = tmp_path_factory.mktemp("secured")
    settings = Settings(
        kafka_bootstrap_servers=secured_kafka.address(LISTENER),
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password=SecretStr(PASSWORD),
        kafka_ssl_cafile=certs.ca,
        kafka_ssl_certfile=certs.client_cert,
        kafka_ssl_keyfile=certs.client_key,
        model_dir=root / "models",
        data_dir=root / "state",
        metrics_port=0,
        kafka_session_timeout_seconds=6.0,
        log_level="info",  # the more a worker logs, the more a leaked secret would show
        embedded_broker="kafka",
    )
    settings = secured_redis.client_settings(settings)
    return PreparedPipeline.prepare(CARD_FRAUD_SPEC, root / "pipeline", settings)


async def _produce(spec: PipelineSpec, kafka: KafkaConnection, count: int) -> int:
    producer = EventProducer(spec, kafka, rate=1000, seed=7)
    stats = await producer.run(asyncio.Event(), count=count)
    return stats.sent


def _flat(text: str) -> str:
    """The CLI's error line, unwrapped (rich wraps it at the terminal width)."""
    return " ".join(text.split())


def test_a_worker_scores_over_sasl_ssl_kafka_and_a_password_redis(
    secured: PreparedPipeline, unique: str
) -> None:
    path, spec = secured.variant(unique)
    kafka = KafkaConnection.from_settings(secured.settings)
    asyncio.run(create_topics(secured.settings, spec))
    worker = start_worker(secured, path, f"secured-{unique}")
    try:
        sent = asyncio.run(_produce(spec, kafka, EVENTS))
        outputs = [spec.output.topic, spec.output.dead_letter_topic]
        received = asyncio.run(consume(kafka, outputs, EVENTS, timeout=50, worker=worker))
        assert worker.running, worker.log_tail()
    finally:
        worker.stop()
    predictions = [orjson.loads(r.value) for r in received[spec.output.topic]]
    assert sent == EVENTS
    assert len(predictions) == EVENTS, worker.log_tail()
    assert not received[spec.output.dead_letter_topic]
    # Features came from the password-protected Redis (Feast's store opened with it), and
    # every prediction was remembered there for the label join (the worker's own client).
    assert any(p["entity_found"] for p in predictions)
    keys = Keys(spec.name)
    client = RedisConnection.from_settings(secured.settings).client()
    try:
        stored = client.exists(*(keys.prediction(p["event_id"]) for p in predictions))
    finally:
        client.close()
    assert stored == EVENTS
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    assert PASSWORD not in log
    assert REDIS_PASSWORD not in log


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"sasl_password": SecretStr("not-the-password")}, "invalid credentials"),
        ({"ssl_cafile": None}, "CERTIFICATE_VERIFY_FAILED"),  # the system CAs don't know ours
        ({"ssl_certfile": None, "ssl_keyfile": None}, "closed"),  # client certificate required
    ],
    ids=["wrong-password", "untrusted-broker", "no-client-certificate"],
)
def test_a_client_with_wrong_credentials_is_refused_saying_why(
    secured: PreparedPipeline, change: dict[str, object], why: str
) -> None:
    right = KafkaConnection.from_settings(secured.settings)
    wrong = KafkaConnection(**{**right.__dict__, **change})  # type: ignore[arg-type]

    async def connect() -> None:
        admin = wrong.admin(request_timeout_ms=5000)
        try:
            await wrong.start(admin)
        finally:
            await admin.close()

    with pytest.raises(ConnectionFailed) as refused:
        asyncio.run(connect())
    message = str(refused.value)
    assert f"cannot connect to Kafka at {right.bootstrap_servers} (SASL_SSL" in message
    assert why in message
    assert PASSWORD not in message and "not-the-password" not in message


def _run_to_exit(secured: PreparedPipeline, settings: Settings, name: str) -> tuple[int, str]:
    path, _ = secured.variant(name)
    worker = WorkerProcess(path, settings, secured.workdir / f"{name}.log")
    try:
        code = worker.process.wait(60)
    finally:
        worker.stop()
    return code, worker.log_path.read_text(errors="replace")


def test_a_worker_with_a_wrong_kafka_password_stops_in_one_line(
    secured: PreparedPipeline, unique: str
) -> None:
    wrong = f"wrong-{unique}"
    settings = secured.settings.model_copy(update={"kafka_sasl_password": SecretStr(wrong)})
    code, log = _run_to_exit(secured, settings, f"wrong-kafka-{unique}")
    assert code == 1, log
    line = _flat(log)
    assert (
        f"error: connect: cannot connect to Kafka at {settings.kafka_bootstrap_servers}"
        " (SASL_SSL, SCRAM-SHA-512 as 'alice'): [Error 58] SaslAuthenticationFailed" in line
    ), log
    assert "Traceback" not in log
    assert wrong not in log and REDIS_PASSWORD not in log


def test_a_worker_with_a_wrong_redis_password_stops_in_one_line(
    secured: PreparedPipeline, unique: str
) -> None:
    wrong = f"wrong-{unique}"
    settings = secured.settings.model_copy(update={"redis_password": SecretStr(wrong)})
    code, log = _run_to_exit(secured, settings, f"wrong-redis-{unique}")
    assert code == 1, log
    redis = RedisConnection.from_settings(settings)
    assert f"error: connect: cannot connect to Redis at {redis.url} (no TLS, password):" in _flat(
        log
    ), log
    assert "Traceback" not in log
    assert wrong not in log and PASSWORD not in log


def test_redis_without_the_password_is_refused(secured: PreparedPipeline) -> None:
    anonymous = RedisConnection(secured.settings.redis_url)
    with pytest.raises(ConnectionFailed, match="Authentication required"):
        anonymous.check()
    RedisConnection.from_settings(secured.settings).check()  # and with it, accepted


def test_the_secured_listener_is_all_the_worker_was_told(secured: PreparedPipeline) -> None:
    """No PLAINTEXT path: the worker's only bootstrap address is the SASL_SSL listener, and
    a PLAINTEXT client there gets nowhere."""
    address = secured.settings.kafka_bootstrap_servers
    assert "," not in address
    plain = KafkaConnection(address)

    async def connect() -> None:
        admin = plain.admin(request_timeout_ms=3000)
        try:
            await plain.start(admin)
        finally:
            await admin.close()

    with pytest.raises(ConnectionFailed):
        asyncio.run(connect())
