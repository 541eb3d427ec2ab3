"""The feature table's schema: column names, feature names and their Arrow types.

The feature table is a Delta Lake table partitioned by ``(shard, date)``; one row is one
labelled event of one tenant. ``shard`` is the registry's shard of the tenant, so a training
bucket reads exactly the partitions of the registry shard it publishes into.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "DATE_COLUMN",
    "FEATURE_NAMES",
    "LABEL_COLUMN",
    "PARTITION_COLUMNS",
    "SHARD_COLUMN",
    "TENANT_COLUMN",
    "table_schema",
]

#: The 20 features every tenant's rows carry, in model column order.
FEATURE_NAMES: tuple[str, ...] = (
    "txn_amount",
    "txn_count_7d",
    "txn_count_30d",
    "avg_txn_amount_30d",
    "account_age_days",
    "days_since_last_login",
    "failed_logins_24h",
    "distinct_devices_30d",
    "distinct_ips_7d",
    "ip_risk_score",
    "email_domain_risk",
    "billing_shipping_distance_km",
    "hour_of_day",
    "is_weekend",
    "chargebacks_365d",
    "refund_ratio_90d",
    "cart_items",
    "session_duration_s",
    "pages_viewed",
    "support_tickets_90d",
)

TENANT_COLUMN = "tenant_id"
DATE_COLUMN = "date"
SHARD_COLUMN = "shard"
LABEL_COLUMN = "label"
PARTITION_COLUMNS: tuple[str, ...] = (SHARD_COLUMN, DATE_COLUMN)


def table_schema() -> pa.Schema:
    """The Arrow schema of the feature table.

    Returns:
        ``tenant_id`` (string), ``date`` (string ``YYYY-MM-DD``), ``shard`` (int32), one
        float64 column per feature (NaN = missing) and ``label`` (int8, 0 or 1).
    """
    fields = [
        pa.field(TENANT_COLUMN, pa.string(), nullable=False),
        pa.field(DATE_COLUMN, pa.string(), nullable=False),
        pa.field(SHARD_COLUMN, pa.int32(), nullable=False),
    ]
    fields += [pa.field(name, pa.float64()) for name in FEATURE_NAMES]
    fields.append(pa.field(LABEL_COLUMN, pa.int8(), nullable=False))
    return pa.schema(fields)
