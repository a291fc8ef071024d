"""Runtime: the worker process (``worker``, ``app``, ``lifecycle``, ``health``), its connections
and retries, and the embedded servers the demo and the tests start (``embedded``, ``brokers``,
``apache_kafka``)."""
