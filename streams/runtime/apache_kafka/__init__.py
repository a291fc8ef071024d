"""Apache Kafka's own broker, fetched from Maven Central and run by the project."""

from streams.runtime.apache_kafka.broker import ApacheKafka
from streams.runtime.apache_kafka.install import KAFKA_VERSION, check_java, kafka_classpath

__all__ = ["KAFKA_VERSION", "ApacheKafka", "check_java", "kafka_classpath"]
