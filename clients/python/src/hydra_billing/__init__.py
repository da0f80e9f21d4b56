"""Python client of Hydra's billing service: meter runs, ask for access, announce tenants.

    from hydra_billing import BillingClient

    billing = BillingClient("https://billing.internal", service_token)
    with billing.metered_run(tenant_id, "fix"):
        run_the_fix()
"""

from .client import BillingClient, MeteredRun, UnavailablePolicy, __version__
from .errors import (
    AccessDenied,
    BillingError,
    BillingUnavailable,
    FeatureNotInPlan,
    FreeTierLimitReached,
    RateLimited,
    SubscriptionRequired,
)
from .models import Access, Reservation, Settlement, Tenant

__all__ = [
    "BillingClient",
    "MeteredRun",
    "UnavailablePolicy",
    "Tenant",
    "Reservation",
    "Settlement",
    "Access",
    "BillingError",
    "FreeTierLimitReached",
    "AccessDenied",
    "SubscriptionRequired",
    "FeatureNotInPlan",
    "BillingUnavailable",
    "RateLimited",
    "__version__",
]
