"""One controller acts per pipeline: a lease in Redis.

A controller holds the key ``streamscore:<pipeline>:controller:lease`` (its random token,
with a TTL) and renews it every tick; another controller of the same pipeline finds it
held, says so once, and waits, taking over when the holder stops renewing (it stopped, or
hangs past the TTL). Set and renewed with compare-and-set so that a controller never
extends or releases a lease it lost.
"""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

# Renew only our own lease: another controller's must run out untouched.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: aioredis.Redis, key: str, ttl_seconds: float) -> None:
        self._client = client
        self.key = key
        self.token = secrets.token_hex(8)
        self._ttl_ms = max(1000, int(ttl_seconds * 1000))

    async def hold(self) -> bool:
        """Take the lease if free, renew it if ours; False while another controller has it."""
        renewed = await self._client.eval(_RENEW, 1, self.key, self.token, self._ttl_ms)  # type: ignore[misc]
        if renewed:
            return True
        taken = await self._client.set(self.key, self.token, nx=True, px=self._ttl_ms)
        return bool(taken)

    async def release(self) -> None:
        await self._client.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
