"""The merchant's own systems seen from peakdesk: products, orders and logistics tracking.

Every merchant has one adapter (`settings.commerce` of the merchant):
- `builtin` (the default): a catalogue and order store in peakdesk's Redis that the merchant
  fills through the REST API or a CSV import — for small merchants and the demo
  (`storage/commerce/builtin.py`);
- `http`: peakdesk calls the merchant's endpoints (shop platform, OMS/ERP, WMS) with
  configurable URLs, auth and field mapping, with timeouts and a cache
  (`storage/commerce/http.py`).

Both answer the same questions (`Adapter`) with the same records (`Product`, `Order`,
`Tracking`); a merchant's system that is down or slow raises `CommerceUnavailable` quickly and
never blocks anything else.
"""
from .base import Adapter, CommerceError, CommerceUnavailable, Order, Product, Tracking

__all__ = ["Adapter", "CommerceError", "CommerceUnavailable", "Order", "Product", "Tracking"]
