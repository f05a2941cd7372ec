"""Transaction logs: customer features and outcomes at a cutoff date."""

import collections
import datetime
import os

import numpy as np
import pytest
from conftest import SHARED_DIR, tiny_config, write_yaml

from ernie_marketing.config import build_config, load_config
from ernie_marketing.config.schema import TransactionsConfig
from ernie_marketing.data import prepare_data, read_table
from ernie_marketing.data import transactions as tx
from ernie_marketing.errors import ConfigError, DataError

CDNOW_TXT = os.path.join(SHARED_DIR, "data", "cdnow", "CDNOW_master.txt")

# A whitespace-separated log written like the CDNOW file: a leading space
# on every line, CRLF line ends and customer ids with leading zeros.
# With the cutoff 2020-01-31 and 4 weeks, the outcome window is
# 2020-02-01 to 2020-02-28.
HAND_LOG = [
    ("customer", "day", "qty", "amount"),
    ("00001", "20200101", "1", "10.00"),
    ("00001", "20200101", "2", "20.00"),  # same day: one purchase day
    ("00001", "20200115", "1", "5.50"),
    ("00001", "20200210", "3", "30.00"),  # in the window
    ("00002", "20200120", "1", "12.00"),
    ("00002", "20200305", "1", "99.00"),  # after the window
    ("00010", "20200201", "4", "40.00"),  # first purchase after the cutoff
    ("00003", "20200131", "1", "7.00"),  # on the cutoff: history
    ("00003", "20200228", "1", "8.00"),  # last day of the window
]


def write_log(path, rows):
    lines = [" " + "  ".join(row) for row in rows]
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\r\n".join(lines) + "\r\n")
    return str(path)


def read_log(path):
    return read_table(str(path), sep="whitespace",
                      string_columns=("customer", "day"))


def hand_config(**changes):
    values = {"customer_column": "customer", "date_column": "day",
              "amount_column": "amount", "quantity_column": "qty",
              "cutoff": "2020-01-31", "horizon_weeks": 4}
    values.update(changes)
    config = TransactionsConfig(**values)
    config.validate("data.transactions")
    return config


@pytest.fixture
def hand_table(tmp_path):
    log = read_log(write_log(tmp_path / "log.txt", HAND_LOG))
    table = tx.customer_table(log, hand_config(), "log.txt")
    return table.set_index("customer")


def derive(tmp_path, rows, **changes):
    log = read_log(write_log(tmp_path / "log.txt", rows))
    return tx.customer_table(log, hand_config(**changes), "log.txt")


# Expected values on the hand-made log ------------------------------------


def test_customers_with_history_only(hand_table):
    assert sorted(hand_table.index) == ["00001", "00002", "00003"]


def test_leading_zero_ids_kept(tmp_path):
    log = read_log(write_log(tmp_path / "log.txt", HAND_LOG))
    assert log["customer"].tolist()[:2] == ["00001", "00001"]
    assert log["day"].tolist()[0] == "20200101"


def test_frequency_counts_days(hand_table):
    assert hand_table.loc["00001", tx.FREQUENCY] == 2
    assert hand_table.loc["00002", tx.FREQUENCY] == 1
    assert hand_table.loc["00003", tx.FREQUENCY] == 1


def test_recency_and_tenure(hand_table):
    assert hand_table.loc["00001", tx.RECENCY_DAYS] == 16
    assert hand_table.loc["00001", tx.TENURE_DAYS] == 30
    assert hand_table.loc["00002", tx.RECENCY_DAYS] == 11
    assert hand_table.loc["00003", tx.RECENCY_DAYS] == 0
    assert hand_table.loc["00003", tx.TENURE_DAYS] == 0


def test_spend_and_quantity(hand_table):
    row = hand_table.loc["00001"]
    assert row[tx.TOTAL_SPEND] == pytest.approx(35.5)
    assert row[tx.MEAN_SPEND] == pytest.approx(17.75)
    assert row[tx.TOTAL_QUANTITY] == 4


def test_days_between_purchases(hand_table):
    assert hand_table.loc["00001", tx.DAYS_BETWEEN_PURCHASES] == 14
    assert hand_table.loc["00002", tx.DAYS_BETWEEN_PURCHASES] == 0


def test_first_purchase_month(hand_table):
    assert hand_table.loc["00001", tx.FIRST_PURCHASE_MONTH] == "2020-01"


def test_repurchase_in_window(hand_table):
    assert hand_table.loc["00001", tx.REPURCHASE] == 1
    assert hand_table.loc["00002", tx.REPURCHASE] == 0
    assert hand_table.loc["00003", tx.REPURCHASE] == 1


def test_future_spend_in_window(hand_table):
    assert hand_table.loc["00001", tx.FUTURE_SPEND] == pytest.approx(30.0)
    assert hand_table.loc["00002", tx.FUTURE_SPEND] == 0.0
    assert hand_table.loc["00003", tx.FUTURE_SPEND] == pytest.approx(8.0)


def test_history_text(hand_table):
    assert hand_table.loc["00001", tx.HISTORY_TEXT] == (
        "首次购买于2020年1月，共购买2次（4件商品），累计消费35.50元，"
        "最近一次购买在16天前")


def test_no_quantity_column(tmp_path):
    table = derive(tmp_path, HAND_LOG, quantity_column=None,
                   currency="美元").set_index("customer")
    assert tx.TOTAL_QUANTITY not in table.columns
    assert table.loc["00002", tx.HISTORY_TEXT] == (
        "首次购买于2020年1月，共购买1次，累计消费12.00美元，"
        "最近一次购买在11天前")


def test_output_columns_documented(hand_table):
    expected = set(tx.FEATURE_COLUMNS) | set(tx.OUTCOME_COLUMNS)
    expected.add(tx.HISTORY_TEXT)
    assert set(hand_table.columns) == expected


def test_no_missing_values(hand_table):
    assert not hand_table.isna().any().any()


# Refunds and bad input ----------------------------------------------------


REFUNDS = HAND_LOG + [
    ("00001", "20200120", "1", "-5.50"),  # history refund, not a purchase
    ("00001", "20200215", "1", "-40.00"),  # window refund larger than spend
]


def test_negative_amount_rejected(tmp_path):
    with pytest.raises(DataError) as info:
        derive(tmp_path, REFUNDS)
    message = str(info.value)
    assert "2 negative amounts" in message
    assert "10: -5.5" in message
    assert "11: -40.0" in message
    assert "negative_amount=refund" in message


def test_refunds_in_net_spend(tmp_path):
    table = derive(tmp_path, REFUNDS, negative_amount="refund")
    row = table.set_index("customer").loc["00001"]
    assert row[tx.TOTAL_SPEND] == pytest.approx(30.0)
    assert row[tx.FREQUENCY] == 2
    assert row[tx.RECENCY_DAYS] == 16


def test_refund_outcome_clipped(tmp_path):
    table = derive(tmp_path, REFUNDS, negative_amount="refund")
    row = table.set_index("customer").loc["00001"]
    assert row[tx.FUTURE_SPEND] == 0.0
    assert row[tx.REPURCHASE] == 1


def test_unparsable_date_named(tmp_path):
    rows = HAND_LOG + [("00004", "2020-01-05", "1", "3.00")]
    with pytest.raises(DataError) as info:
        derive(tmp_path, rows)
    message = str(info.value)
    assert "'day'" in message
    assert "10: '2020-01-05'" in message
    assert "date_format='%Y%m%d'" in message


def test_other_date_format(tmp_path):
    rows = [(c, f"{d[:4]}-{d[4:6]}-{d[6:]}" if i else d, q, a)
            for i, (c, d, q, a) in enumerate(HAND_LOG)]
    table = derive(tmp_path, rows, date_format="%Y-%m-%d")
    assert table.set_index("customer").loc["00001", tx.RECENCY_DAYS] == 16


def test_text_amount_named(tmp_path):
    rows = HAND_LOG + [("00004", "20200105", "1", "ten")]
    with pytest.raises(DataError) as info:
        derive(tmp_path, rows)
    message = str(info.value)
    assert "'amount'" in message
    assert "10: 'ten'" in message


def test_missing_column_named(tmp_path):
    with pytest.raises(DataError) as info:
        derive(tmp_path, HAND_LOG, amount_column="dollars")
    message = str(info.value)
    assert "data.transactions.amount_column='dollars'" in message
    assert "'amount'" in message


@pytest.mark.parametrize("cutoff", ["2019-12-31", "2020-03-05", "2021-01-01"])
def test_cutoff_outside_dates(tmp_path, cutoff):
    with pytest.raises(DataError) as info:
        derive(tmp_path, HAND_LOG, cutoff=cutoff)
    message = str(info.value)
    assert "outside the dates" in message
    assert "2020-01-01 to 2020-03-05" in message


def test_horizon_past_last_date(tmp_path):
    with pytest.raises(DataError) as info:
        derive(tmp_path, HAND_LOG, cutoff="2020-02-20")
    message = str(info.value)
    assert "2020-03-19" in message
    assert "on or before 2020-02-06" in message


def test_cutoff_in_date_format(tmp_path):
    table = derive(tmp_path, HAND_LOG, cutoff="20200131")
    assert len(table) == 3


# Config --------------------------------------------------------------------


def transactions_raw(tmp_path, **transactions):
    section = {"customer_column": "customer", "date_column": "day",
               "amount_column": "amount", "quantity_column": "qty",
               "cutoff": "2020-01-31", "horizon_weeks": 4}
    section.update(transactions)
    data = {"sep": "whitespace", "transactions": section,
            "text_columns": [tx.HISTORY_TEXT], "id_column": "customer",
            "split": [1.0, 0.0, 0.0], "drop_duplicates": False}
    raw = tiny_config(tmp_path / "log.txt", tmp_path / "run", data=data)
    raw["tasks"] = [{"name": "repurchase", "type": "binary",
                     "label_column": tx.REPURCHASE}]
    return raw


@pytest.mark.parametrize("key, value, expected", [
    ("cutoff", "31/01/2020", "data.transactions.cutoff"),
    ("horizon_weeks", 0, "data.transactions.horizon_weeks"),
    ("date_format", "YYYYMMDD", "data.transactions.date_format"),
    ("negative_amount", "skip", "'refund'"),
])
def test_config_rejects(tmp_path, key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config(transactions_raw(tmp_path, **{key: value}))


def test_config_unquoted_date_read_as_text(tmp_path):
    raw = transactions_raw(tmp_path, cutoff=datetime.date(2020, 1, 31))
    path = write_yaml(tmp_path / "c.yaml", raw)
    config = load_config(path)
    assert config.data.transactions.cutoff == "2020-01-31"


def test_config_missing_customer_column(tmp_path):
    raw = transactions_raw(tmp_path)
    del raw["data"]["transactions"]["customer_column"]
    with pytest.raises(ConfigError,
                       match="data.transactions.customer_column is missing"):
        build_config(raw)


def test_prepare_data_from_log(tmp_path):
    write_log(tmp_path / "log.txt", HAND_LOG)
    config = build_config(transactions_raw(tmp_path))
    train = prepare_data(config).splits["train"]
    assert sorted(train.row_ids.tolist()) == ["00001", "00002", "00003"]
    i = train.row_ids.tolist().index("00002")
    assert train.texts[i].startswith("首次购买于2020年1月，共购买1次")
    assert train.frame[tx.FUTURE_SPEND].sum() == pytest.approx(38.0)


# The real CDNOW file -------------------------------------------------------


@pytest.fixture(scope="module")
def cdnow_head():
    """The first 3,000 transactions of the real file, read as training does."""
    return read_table(CDNOW_TXT, sep="whitespace", nrows=3000,
                      string_columns=("customer_id", "date"))


def cdnow_config(cutoff="1997-09-30"):
    return hand_config(customer_column="customer_id", date_column="date",
                       amount_column="dollar_value",
                       quantity_column="number_of_cds", cutoff=cutoff,
                       horizon_weeks=26)


def reference_table(log, cutoff, horizon_end):
    """Derive frequency, recency and outcomes with plain Python loops."""
    days = collections.defaultdict(set)
    window = collections.defaultdict(float)
    bought_again = set()
    for customer, date, amount in zip(log["customer_id"], log["date"],
                                      log["dollar_value"]):
        day = datetime.datetime.strptime(date, "%Y%m%d").date()
        if day <= cutoff:
            days[customer].add(day)
        elif day <= horizon_end:
            window[customer] += amount
            bought_again.add(customer)
    return {customer: (len(d), (cutoff - max(d)).days,
                       int(customer in bought_again), window[customer])
            for customer, d in days.items()}


def test_cdnow_head_ids_and_dates(cdnow_head):
    assert cdnow_head["customer_id"].iloc[0] == "00001"
    assert cdnow_head["date"].iloc[0] == "19970101"
    assert list(cdnow_head.columns) == ["customer_id", "date",
                                        "number_of_cds", "dollar_value"]


def test_cdnow_head_matches_reference(cdnow_head):
    table = tx.customer_table(cdnow_head, cdnow_config(), "CDNOW head")
    cutoff = datetime.date(1997, 9, 30)
    expected = reference_table(cdnow_head, cutoff,
                               cutoff + datetime.timedelta(weeks=26))
    assert len(table) == len(expected)
    for row in table.itertuples(index=False):
        frequency, recency, repurchase, spend = expected[row.customer_id]
        assert row.frequency == frequency, row.customer_id
        assert row.recency_days == recency, row.customer_id
        assert row.repurchase == repurchase, row.customer_id
        assert row.future_spend == pytest.approx(spend), row.customer_id


def test_cdnow_head_known_customer(cdnow_head):
    table = tx.customer_table(cdnow_head, cdnow_config(), "CDNOW head")
    row = table.set_index("customer_id").loc["00003"]
    # 00003 bought on 1997-01-02, 03-30 and 04-02, then on 1997-11-15
    # (5 CDs, 57.45) and 11-25 (4 CDs, 20.96).
    assert row[tx.FREQUENCY] == 3
    assert row[tx.RECENCY_DAYS] == 181
    assert row[tx.TOTAL_SPEND] == pytest.approx(20.76 + 20.76 + 19.54)
    assert row[tx.REPURCHASE] == 1
    assert row[tx.FUTURE_SPEND] == pytest.approx(57.45 + 20.96)


def test_cdnow_head_rates(cdnow_head):
    table = tx.customer_table(cdnow_head, cdnow_config(), "CDNOW head")
    repurchase = table[tx.REPURCHASE].to_numpy()
    spend = table[tx.FUTURE_SPEND].to_numpy()
    assert 0.1 < repurchase.mean() < 0.5
    assert (spend[repurchase == 0] == 0).all()
    assert np.isfinite(table[list(tx.FEATURE_COLUMNS[:-1])].to_numpy()).all()
