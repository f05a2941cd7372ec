"""A seeded Chinese marketing dataset with known true effects, for the quickstart.

Each customer has structured fields (age, city tier, channel, membership,
90-day orders and spend, days since the last order, past coupon use) and a
short Chinese behaviour text: recently searched products and a review-like
remark. Two latent traits drive the outcomes: an interest category, which
the searched products reveal, and a price sensitivity, which the remark
hints at (only weakly reflected in `coupon_used_before`). So a model that
reads the text can target better than one that uses only the fields.

Each customer is randomly given one of three actions: no offer (不发券), a
full-reduction coupon (满减券, 满200减30) or a 10% discount coupon (折扣券),
with shares 40/30/30. The outcomes follow a click -> conversion -> spend
funnel: `click` (opened the offer page or the shop), `conversion` (bought,
only after a click) and `spend` (order amount in yuan, 0 without an
order). The coupons' effects differ by customer: price-sensitive customers
respond, the full-reduction coupon works for large-basket categories
(digital goods, baby products, home goods) and the discount for small
baskets (cosmetics, clothing, food), and high-tier members click less on
coupon pushes. Some labels are missing, as in tracking data, at random:
3% of `click`, 1% of `conversion` and 3% of `spend`.

For every customer the generator also returns the true expected outcomes
under every action, as `<outcome>@<action>` columns, so the value of the
best possible policy is known. Everything follows from the seed: the same
seed and row count give byte-identical files.
"""

import os

import numpy as np
import pandas as pd

ACTIONS = ("不发券", "满减券", "折扣券")
CONTROL = ACTIONS[0]
ACTION_SHARES = (0.4, 0.3, 0.3)
OUTCOMES = ("click", "conversion", "spend")
ID_COLUMN = "customer_id"
TREATMENT_COLUMN = "offer"
NUMERIC_COLUMNS = ("age", "orders_90d", "spend_90d", "days_since_last_order",
                   "coupon_used_before")
CATEGORICAL_COLUMNS = ("city_tier", "channel", "membership")
# Shares of the customers in the train, validation and test files.
SPLIT_SHARES = (0.72, 0.08, 0.2)
FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv",
         "truth": "truth.csv"}

CITY_TIERS = ("一线", "新一线", "二线", "三线及以下")
CHANNELS = ("App", "小程序", "网页")
MEMBERSHIPS = ("普通", "银卡", "金卡", "黑金")
# Interest categories: searched products, typical order amount in yuan, and
# whether the basket is large enough for 满200减30 to matter.
CATEGORIES = {
    "美妆护肤": ("精华液 防晒霜 面膜 口红 洗面奶 粉底液".split(), 160, False),
    "数码电子": ("蓝牙耳机 机械键盘 充电宝 智能手表 平板电脑 显示器".split(), 420,
                 True),
    "母婴用品": ("纸尿裤 奶粉 婴儿推车 儿童绘本 辅食机 安全座椅".split(), 300, True),
    "运动户外": ("跑步鞋 瑜伽垫 登山包 速干衣 羽毛球拍 运动手环".split(), 240, False),
    "食品生鲜": ("坚果礼盒 咖啡豆 牛奶 车厘子 挂面 零食大礼包".split(), 90, False),
    "服饰鞋包": ("连衣裙 羽绒服 双肩包 牛仔裤 帆布鞋 卫衣".split(), 180, False),
    "家居日用": ("收纳箱 四件套 扫地机器人 保温杯 洗衣液 空气炸锅".split(), 280,
                 True),
}
# Remarks by price sensitivity (low, middle, high) and by purchase intent.
REMARKS = (
    ("品质好就行，价格无所谓", "直接买了正品，不等活动", "发货快最重要",
     "一直买这个牌子，很放心"),
    ("包装完好，物流很快", "质量还可以，会回购", "客服态度不错", "和描述一致"),
    ("有券才下单", "等大促再囤货", "价格有点贵，希望多发优惠券",
     "凑满减很划算", "比价之后才买的", "降价了再买"),
)
INTENT_PHRASES = (("随便看看", "先收藏了"), ("对比了几家", "看了评价"),
                  ("已经加入购物车", "准备下单"))


def generate(rows=12000, seed=0):
    """Return (customers, truth): two DataFrames with one row per customer.

    `customers` has the id, the fields, `text`, the randomized `offer` and
    the observed outcomes (NaN where a label is missing). `truth` has the
    id and the true expected outcome of every outcome under every action.
    """
    if rows < 100:
        raise ValueError(f"rows={rows} is too few for a train and a test "
                         "split; use at least 100")
    rng = np.random.default_rng(seed)
    fields, latent = _customers(rng, rows)
    fields["text"] = _texts(rng, latent)
    offer = rng.choice(len(ACTIONS), size=rows, p=ACTION_SHARES)
    fields[TREATMENT_COLUMN] = np.array(ACTIONS, dtype=object)[offer]
    expected = [_expected_outcomes(fields, latent, a) for a in range(len(ACTIONS))]
    observed = _observe(rng, fields, latent, offer)
    customers = pd.DataFrame({**fields, **observed})
    truth = {ID_COLUMN: fields[ID_COLUMN]}
    for action, outcomes in zip(ACTIONS, expected):
        for name in OUTCOMES:
            truth[f"{name}@{action}"] = outcomes[name]
    return customers, pd.DataFrame(truth)


def write_dataset(folder, rows=12000, seed=0):
    """Write train.csv, valid.csv, test.csv and truth.csv; return their paths.

    The splits are consecutive blocks of 72%, 8% and 20% of the customers,
    whose order is already random. truth.csv covers the test customers.
    """
    customers, truth = generate(rows, seed)
    os.makedirs(folder, exist_ok=True)
    first = int(round(rows * SPLIT_SHARES[0]))
    second = first + int(round(rows * SPLIT_SHARES[1]))
    paths = {name: os.path.join(folder, file) for name, file in FILES.items()}
    _write_csv(customers.iloc[:first], paths["train"])
    _write_csv(customers.iloc[first:second], paths["valid"])
    _write_csv(customers.iloc[second:], paths["test"])
    _write_csv(truth.iloc[second:], paths["truth"])
    return paths


def _write_csv(frame, path):
    frame.to_csv(path, index=False, encoding="utf-8", float_format="%.6g",
                 lineterminator="\n")


def _customers(rng, rows):
    """Return the observed fields and the latent traits of `rows` customers."""
    membership = rng.choice(4, size=rows, p=(0.55, 0.25, 0.15, 0.05))
    city = rng.choice(4, size=rows, p=(0.2, 0.25, 0.3, 0.25))
    channel = rng.choice(3, size=rows, p=(0.5, 0.3, 0.2))
    category = rng.integers(0, len(CATEGORIES), size=rows)
    # Price sensitivity in [0, 1]: higher in lower-tier cities and for
    # ordinary members.
    sensitivity = rng.beta(2.0, 2.0, size=rows)
    sensitivity = np.clip(sensitivity + 0.08 * city - 0.07 * membership, 0, 1)
    intent = rng.normal(0.0, 1.0, size=rows)

    # Purchase history follows membership and intent.
    orders = rng.poisson(0.6 + 0.9 * membership + 0.3 * np.maximum(intent, 0))
    basket = np.array([v[1] for v in CATEGORIES.values()])[category]
    spend = np.where(orders > 0, orders * basket * rng.lognormal(0, 0.4, rows), 0.0)
    days = np.where(orders > 0, rng.integers(1, 90, size=rows),
                    rng.integers(90, 366, size=rows))
    coupon_used = (rng.random(rows) < 0.15 + 0.5 * sensitivity).astype(np.int64)

    fields = {
        ID_COLUMN: np.array([f"U{i:06d}" for i in range(1, rows + 1)],
                            dtype=object),
        "age": np.clip(np.round(rng.normal(33, 9, rows)), 18, 70).astype(np.int64),
        "city_tier": np.array(CITY_TIERS, dtype=object)[city],
        "channel": np.array(CHANNELS, dtype=object)[channel],
        "membership": np.array(MEMBERSHIPS, dtype=object)[membership],
        "orders_90d": orders.astype(np.int64),
        "spend_90d": np.round(spend, 2),
        "days_since_last_order": days.astype(np.int64),
        "coupon_used_before": coupon_used,
    }
    latent = {"category": category, "sensitivity": sensitivity,
              "intent": intent, "membership": membership, "city": city,
              "channel": channel}
    return fields, latent


def _texts(rng, latent):
    """Return one behaviour text per customer: searches, a remark, an intent."""
    names = list(CATEGORIES)
    texts = []
    for i in range(len(latent["category"])):
        products = list(CATEGORIES[names[latent["category"][i]]][0])
        searched = list(rng.choice(products, size=2, replace=False))
        if rng.random() < 0.4:
            other = CATEGORIES[names[rng.integers(0, len(names))]][0]
            searched.append(other[rng.integers(0, len(other))])
        level = int(np.digitize(latent["sensitivity"][i]
                                + rng.normal(0, 0.12), (0.35, 0.6)))
        remark = REMARKS[level][rng.integers(0, len(REMARKS[level]))]
        stage = int(np.digitize(latent["intent"][i], (-0.5, 0.7)))
        phrase = INTENT_PHRASES[stage][rng.integers(0, 2)]
        texts.append(f"最近搜索：{'、'.join(searched)}。{remark}，{phrase}。")
    return np.array(texts, dtype=object)


def _expected_outcomes(fields, latent, action):
    """Return the true P(click), P(conversion) and E[spend] under `action`."""
    s = latent["sensitivity"]
    large_basket = np.array([v[2] for v in CATEGORIES.values()])[latent["category"]]
    base_basket = np.array([v[1] for v in CATEGORIES.values()])[latent["category"]]
    loyal = np.log1p(fields["orders_90d"])
    click_logit = (-1.5 + 0.7 * latent["intent"] + 0.3 * (latent["channel"] == 0)
                   + 0.2 * loyal - 0.002 * fields["days_since_last_order"])
    buy_logit = -1.6 + 0.5 * latent["intent"] + 0.3 * loyal
    log_amount = np.log(base_basket) + 0.1 * np.log1p(fields["spend_90d"] / 100)
    # A coupon push draws clicks from price-sensitive customers and fewer
    # from top-tier (黑金) members.
    push = 1.2 * (s - 0.3) - 0.5 * (latent["membership"] == 3)
    if action == 1:  # 满减券: works on price-sensitive, large-basket customers
        click_logit = click_logit + push
        buy_logit = buy_logit + np.where(large_basket, 2.4 * (s - 0.35),
                                         0.6 * (s - 0.5))
        log_amount = log_amount + np.where(large_basket, 0.12, 0.0)
    elif action == 2:  # 折扣券: works on price-sensitive, small-basket customers
        click_logit = click_logit + push
        buy_logit = buy_logit + np.where(large_basket, 0.6 * (s - 0.5),
                                         2.0 * (s - 0.35))
        log_amount = log_amount + 0.05
    p_click = _sigmoid(click_logit)
    p_conversion = p_click * _sigmoid(buy_logit)
    # Order amounts are log-normal with sigma 0.5 around exp(log_amount).
    amount = np.exp(log_amount + 0.5 ** 2 / 2)
    return {"click": p_click, "conversion": p_conversion,
            "spend": p_conversion * amount, "_log_amount": log_amount}


def _observe(rng, fields, latent, offer):
    """Draw the observed outcomes under each customer's offer, with gaps."""
    rows = len(offer)
    click = np.zeros(rows)
    conversion = np.zeros(rows)
    spend = np.zeros(rows)
    for a in range(len(ACTIONS)):
        assigned = offer == a
        truth = _expected_outcomes(fields, latent, a)
        p_buy = truth["conversion"] / truth["click"]
        u_click, u_buy = rng.random(rows), rng.random(rows)
        amount = np.exp(truth["_log_amount"] + rng.normal(0, 0.5, rows))
        clicked = u_click < truth["click"]
        bought = clicked & (u_buy < p_buy)
        click[assigned] = clicked[assigned]
        conversion[assigned] = bought[assigned]
        spend[assigned] = np.where(bought, np.round(amount, 2), 0.0)[assigned]
    # Labels go missing at random, independently of the outcomes, so that
    # dropping unlabelled rows keeps estimates unbiased.
    click[rng.random(rows) < 0.03] = np.nan
    conversion[rng.random(rows) < 0.01] = np.nan
    spend[rng.random(rows) < 0.03] = np.nan
    return {"click": click, "conversion": conversion, "spend": spend}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
