"""Payment providers: ``sandbox`` (default), ``wechat`` (APIv3 Native), ``alipay`` (precreate)."""

from __future__ import annotations

import httpx

from vendhw.errors import ConfigurationError
from vendhw.server.db import Database
from vendhw.server.providers.base import (
    NotificationError,
    NotificationReply,
    OrderInfo,
    PaymentEvent,
    PaymentProvider,
    ProviderError,
    QrCode,
    RefundEvent,
    RefundRequest,
    RefundResult,
    RefundState,
    TradeStatus,
)
from vendhw.server.settings import Clock, ServerSettings

PROVIDERS = ("sandbox", "wechat", "alipay")


def enabled_providers(settings: ServerSettings) -> list[str]:
    """The default provider plus every provider with a table of options.

    The sandbox pays for free, so it exists only when asked for: a production server that
    sets ``--provider wechat`` has no sandbox endpoints at all.
    """
    names = [settings.provider, *settings.providers]
    unknown = sorted(set(names) - set(PROVIDERS))
    if unknown:
        raise ConfigurationError(f"unknown provider(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(PROVIDERS)}")
    return list(dict.fromkeys(names))


def build_providers(settings: ServerSettings, db: Database, clock: Clock,
                    http: httpx.Client | None = None) -> dict[str, PaymentProvider]:
    """One instance per enabled provider; ``http`` lets tests answer for the real APIs."""
    from vendhw.server.providers.alipay import AlipayProvider
    from vendhw.server.providers.sandbox import SandboxProvider
    from vendhw.server.providers.wechat import WeChatPayProvider

    result: dict[str, PaymentProvider] = {}
    for name in enabled_providers(settings):
        options = settings.providers.get(name, {})
        if name == "sandbox":
            result[name] = SandboxProvider(db, clock, public_url=settings.public_url,
                                           secret=settings.sandbox_secret)
        elif name == "wechat":
            result[name] = WeChatPayProvider(options, clock, public_url=settings.public_url,
                                             http=http)
        else:
            result[name] = AlipayProvider(options, clock, public_url=settings.public_url,
                                          http=http)
    return result


__all__ = [
    "PROVIDERS",
    "NotificationError",
    "NotificationReply",
    "OrderInfo",
    "PaymentEvent",
    "PaymentProvider",
    "ProviderError",
    "QrCode",
    "RefundEvent",
    "RefundRequest",
    "RefundResult",
    "RefundState",
    "TradeStatus",
    "build_providers",
    "enabled_providers",
]
