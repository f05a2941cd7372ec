"""Turn a transaction log into one row per customer at a cutoff date.

Transactions on or before the cutoff are the customer's history and give
the features; transactions in the `horizon_weeks` after it give the
outcomes. Only customers with at least one purchase on or before the
cutoff get a row, so every row describes a known customer.

Refunds: a negative amount is rejected unless
`data.transactions.negative_amount` is "refund". Refund rows then count
in the spend sums (net spend) but are not purchases, so they change no
count, date or quantity, and a net negative spend in the outcome window
is clipped to 0 in `future_spend`.
"""

import logging

import numpy as np
import pandas as pd

from ..errors import DataError

logger = logging.getLogger(__name__)

# Columns of the derived customer table, besides the customer column.
FREQUENCY = "frequency"  # number of distinct purchase days in the history
RECENCY_DAYS = "recency_days"  # days from the last purchase to the cutoff
TENURE_DAYS = "tenure_days"  # days from the first purchase to the cutoff
TOTAL_SPEND = "total_spend"  # net amount over the history
MEAN_SPEND = "mean_spend"  # total_spend / frequency
TOTAL_QUANTITY = "total_quantity"  # only with quantity_column
# Mean days between consecutive purchase days; 0 with one purchase day.
DAYS_BETWEEN_PURCHASES = "days_between_purchases"
FIRST_PURCHASE_MONTH = "first_purchase_month"  # "YYYY-MM" text
REPURCHASE = "repurchase"  # 1 if a purchase falls in the outcome window
FUTURE_SPEND = "future_spend"  # amount in the outcome window, at least 0
HISTORY_TEXT = "history_text"  # the history in Chinese words

FEATURE_COLUMNS = (FREQUENCY, RECENCY_DAYS, TENURE_DAYS, TOTAL_SPEND,
                   MEAN_SPEND, TOTAL_QUANTITY, DAYS_BETWEEN_PURCHASES,
                   FIRST_PURCHASE_MONTH)
OUTCOME_COLUMNS = (REPURCHASE, FUTURE_SPEND)

# Bad rows named in an error message.
_SHOWN_ROWS = 5


def customer_table(log, config, path):
    """Return one row per customer derived from the transaction log `log`.

    `config` is a TransactionsConfig and `path` names the file in errors.
    Raises DataError for missing columns, unparsable dates or amounts,
    negative amounts (unless refunds are allowed) and a cutoff whose
    outcome window does not fit inside the log's dates.
    """
    _check_columns(log, config, path)
    log = _parse_log(log, config, path)
    cutoff = pd.Timestamp(config.cutoff_date())
    horizon_end = cutoff + pd.Timedelta(weeks=config.horizon_weeks)
    _check_window(log["date"], cutoff, horizon_end, config, path)

    history = log[log["date"] <= cutoff]
    window = log[(log["date"] > cutoff) & (log["date"] <= horizon_end)]
    table = _history_features(history, cutoff, config)
    if table.empty:
        raise DataError(f"no customer in {path} has a purchase on or before "
                        f"data.transactions.cutoff={config.cutoff!r} (rows "
                        "with negative amounts are refunds, not purchases); "
                        "choose a later cutoff or check the amounts")
    table = _add_outcomes(table, window)
    table[HISTORY_TEXT] = _history_texts(table, config)

    logger.info(
        "%s: %d transactions of %d customers; %d customers bought on or "
        "before the cutoff %s; %d of them (%.1f%%) bought again by %s",
        path, len(log), log["customer"].nunique(), len(table),
        cutoff.date(), int(table[REPURCHASE].sum()),
        100 * table[REPURCHASE].mean(), horizon_end.date())
    return table.reset_index().rename(
        columns={"customer": config.customer_column})


def _check_columns(log, config, path):
    columns_by_key = {"customer_column": config.customer_column,
                      "date_column": config.date_column,
                      "amount_column": config.amount_column,
                      "quantity_column": config.quantity_column}
    missing = {key: name for key, name in columns_by_key.items()
               if name is not None and name not in log.columns}
    if missing:
        keys = ", ".join(f"data.transactions.{key}={name!r}"
                         for key, name in missing.items())
        raise DataError(f"{keys}: column not found in {path}, which has "
                        f"columns {list(log.columns)}; fix the column name, "
                        "or data.sep if the file was read as one column")


def _parse_log(log, config, path):
    """Return the log as customer, date, amount and quantity columns."""
    customer = log[config.customer_column]
    bad = customer.isna() | (customer.astype(str).str.strip() == "")
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} rows have no customer in "
                        f"column {config.customer_column!r}, e.g. rows "
                        f"{_row_numbers(bad)}; fill or remove them")
    parsed = pd.DataFrame({
        "customer": customer.astype(str).str.strip().to_numpy(),
        "date": _parse_dates(log[config.date_column], config, path),
        "amount": _parse_numbers(log[config.amount_column],
                                 "amount_column", path),
    })
    if config.quantity_column is not None:
        parsed["quantity"] = _parse_numbers(log[config.quantity_column],
                                            "quantity_column", path)
    negative = parsed["amount"] < 0
    if negative.any() and config.negative_amount == "error":
        examples = _row_values(log, negative, config.amount_column)
        raise DataError(
            f"{path}: column {config.amount_column!r} has "
            f"{int(negative.sum())} negative amounts, e.g. rows {examples}; "
            "fix them, or set data.transactions.negative_amount=refund to "
            "count them as refunds (net spend, not purchases)")
    if negative.any():
        logger.info("%s: %d negative amounts counted as refunds", path,
                    int(negative.sum()))
    parsed["purchase"] = ~negative
    return parsed


def _parse_dates(values, config, path):
    text = values.astype(str).str.strip()
    dates = pd.to_datetime(text, format=config.date_format, errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        examples = _row_values(values.to_frame(), bad, values.name)
        raise DataError(f"{path}: {int(bad.sum())} values of column "
                        f"{values.name!r} do not match "
                        f"data.transactions.date_format="
                        f"{config.date_format!r}, e.g. rows {examples}; fix "
                        "them or set date_format, e.g. '%Y-%m-%d'")
    return dates.to_numpy()


def _parse_numbers(values, key, path):
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers.astype(float))
    if bad.any():
        examples = _row_values(values.to_frame(), bad, values.name)
        raise DataError(f"{path}: {int(bad.sum())} values of column "
                        f"{values.name!r} (data.transactions.{key}) are "
                        f"missing or not numbers, e.g. rows {examples}; fix or "
                        "remove those rows")
    return numbers.astype(float).to_numpy()


def _row_numbers(mask):
    """Return the first row numbers of `mask`, counted from 1 after the header."""
    return (np.flatnonzero(np.asarray(mask)) + 1)[:_SHOWN_ROWS].tolist()


def _row_values(frame, mask, column):
    """Return {row number: value} for the first rows of `mask`."""
    index = np.flatnonzero(np.asarray(mask))[:_SHOWN_ROWS]
    values = frame[column].to_numpy()
    return {int(i) + 1: values[i] for i in index}


def _check_window(dates, cutoff, horizon_end, config, path):
    first, last = dates.min(), dates.max()
    if not first <= cutoff < last:
        raise DataError(f"data.transactions.cutoff={config.cutoff!r} is "
                        f"outside the dates of {path} ({first.date()} to "
                        f"{last.date()}); choose a cutoff from the first date "
                        "up to the day before the last")
    if horizon_end > last:
        latest = (last - pd.Timedelta(weeks=config.horizon_weeks)).date()
        raise DataError(f"data.transactions.cutoff={config.cutoff!r} with "
                        f"horizon_weeks={config.horizon_weeks} ends the "
                        f"outcome window on {horizon_end.date()}, after the "
                        f"last transaction in {path} ({last.date()}), so "
                        "outcomes would be cut short; choose a cutoff on or "
                        f"before {latest} or fewer horizon_weeks")


def _history_features(history, cutoff, config):
    """Return the history features, one row per customer with a purchase."""
    purchases = history[history["purchase"]]
    grouped = purchases.groupby("customer")
    first = grouped["date"].min()
    last = grouped["date"].max()
    frequency = grouped["date"].nunique()
    # Net spend includes refund rows of customers who also bought.
    spend = history.groupby("customer")["amount"].sum().reindex(first.index)
    table = pd.DataFrame({
        FREQUENCY: frequency.astype(np.int64),
        RECENCY_DAYS: (cutoff - last).dt.days.astype(np.int64),
        TENURE_DAYS: (cutoff - first).dt.days.astype(np.int64),
        TOTAL_SPEND: spend.astype(float),
        MEAN_SPEND: (spend / frequency).astype(float),
    })
    if config.quantity_column is not None:
        table[TOTAL_QUANTITY] = grouped["quantity"].sum().astype(float)
    span = (last - first).dt.days.astype(float)
    gaps = span / (frequency - 1).where(frequency > 1)
    table[DAYS_BETWEEN_PURCHASES] = gaps.fillna(0.0)
    table[FIRST_PURCHASE_MONTH] = first.dt.strftime("%Y-%m")
    return table


def _add_outcomes(table, window):
    in_table = window[window["customer"].isin(table.index)]
    bought = in_table[in_table["purchase"]]["customer"].unique()
    table[REPURCHASE] = table.index.isin(bought).astype(np.int64)
    spend = in_table.groupby("customer")["amount"].sum()
    table[FUTURE_SPEND] = spend.reindex(table.index).fillna(0.0).clip(
        lower=0.0)
    return table


def _history_texts(table, config):
    """Describe each customer's history in Chinese, e.g. for ERNIE's input."""
    currency = config.currency
    texts = []
    for row in table.itertuples(index=False):
        row = row._asdict()
        year, month = row[FIRST_PURCHASE_MONTH].split("-")
        quantity = ""
        if TOTAL_QUANTITY in row:
            quantity = f"（{row[TOTAL_QUANTITY]:g}件商品）"
        texts.append(
            f"首次购买于{year}年{int(month)}月，共购买{row[FREQUENCY]}次"
            f"{quantity}，累计消费{row[TOTAL_SPEND]:.2f}{currency}，"
            f"最近一次购买在{row[RECENCY_DAYS]}天前")
    return texts
