#!/usr/bin/env python3
"""Generate the synthetic customer-support routing dataset used by ``finetune-kit demo``.

Every row is a short, made-up customer-support message that has to be routed to
one of four teams: ``billing``, ``shipping``, ``account`` or ``technical``.
All texts are synthetic: they are assembled from the hand-written templates and
slot fillers in this file (no external data is used).  The generator is fully
deterministic (fixed seed, stdlib ``random`` only), so re-running it reproduces
the shipped CSV files byte for byte.

Some messages deliberately mention vocabulary of another team ("the app crashed
and I was charged twice" is a billing request) or add a minor side remark about
another team's topic, and a quarter of the request phrasings are held out of the
training split (they only occur in validation/test), so a plain keyword lookup
does not solve the task perfectly.

Usage::

    python examples/make_demo_data.py [--output-dir DIR]

Writes ``train.csv`` (800 rows), ``validation.csv`` (200 rows) and ``test.csv``
(200 rows), each with the header ``text,label`` and balanced labels.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

SEED = 20240611
LABELS = ("billing", "shipping", "account", "technical")
SPLIT_SIZES = (("train", 200), ("validation", 50), ("test", 50))  # rows per label
MIN_WORDS, MAX_WORDS = 6, 30

# Probabilities of the optional parts of a message.
P_OPENER = 0.55
P_CONTEXT = 0.40
P_CLOSER = 0.50
P_HARD = 0.35  # share of "hard" intents that use another team's vocabulary
HELD_OUT_EVERY = 4  # every 4th intent template appears only in validation/test
P_ASIDE = 0.30  # share of messages with a side remark that belongs to another team
P_TYPO = 0.08
P_LOWERCASE = 0.05

# --------------------------------------------------------------------------- #
# Slot fillers
# --------------------------------------------------------------------------- #

PRODUCTS = [
    "pair of wireless headphones", "standing desk", "coffee grinder", "yoga mat",
    "phone case", "smart watch", "desk lamp", "hiking backpack", "blender",
    "mechanical keyboard", "water bottle", "air fryer", "monitor stand",
    "pair of running shoes", "bluetooth speaker", "office chair", "electric kettle",
    "rain jacket", "camping tent", "baby monitor", "robot vacuum",
    "set of kitchen knives", "gaming mouse", "pair of winter boots",
]
PLANS = [
    "Basic plan", "Pro plan", "Family plan", "Premium subscription",
    "annual membership", "monthly subscription", "Plus membership",
    "Business plan", "student plan",
]
SPANS = [
    "two days", "three days", "a week", "ten days", "two weeks", "three weeks",
    "a month", "over a month", "five days", "more than a week", "four days",
    "48 hours", "almost two weeks", "six weeks",
]
AGO_SPANS = [
    "two days ago", "yesterday", "last week", "a week ago", "three weeks ago",
    "last month", "on Monday", "this morning", "ten days ago", "on Friday",
]
DEVICES = [
    "iPhone", "Android phone", "Windows laptop", "MacBook", "iPad",
    "Chromebook", "Android tablet", "Linux desktop", "work laptop",
    "old Samsung phone", "Pixel phone",
]
GADGETS = [
    "smart watch", "bluetooth speaker", "robot vacuum", "baby monitor",
    "wireless headphones", "e-reader", "fitness tracker", "smart doorbell",
]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "the mobile browser"]
FEATURES = [
    "search bar", "wishlist", "order history page", "chat window",
    "product filters", "photo upload", "dark mode", "price alerts",
    "barcode scanner", "notifications", "size guide", "reviews tab",
]
ERRORS = [
    "Error 503", "Something went wrong", "Unexpected error (code 17)",
    "Request timed out", "Unable to connect", "Oops, please try again",
    "Error 500: internal server error", "Network error",
]
PAY_MESSAGES = [
    "Payment failed", "Card declined", "Transaction not authorised",
    "Payment pending", "Insufficient funds",
]
ACCOUNT_MESSAGES = [
    "Invalid credentials", "Account locked", "Email already in use",
    "Verification failed", "Session expired",
]
TRACKING_MESSAGES = [
    "Label created", "In transit", "Delivered", "Held at depot",
    "Delivery attempted", "Returned to sender",
]
COUNTRIES = [
    "Canada", "Norway", "Portugal", "New Zealand", "Ireland", "Chile",
    "Japan", "Poland", "Kenya", "Iceland", "Mexico", "Greece",
]
CITIES = [
    "a city I have never been to", "another country", "Lisbon", "Toronto",
    "Warsaw", "Osaka", "Nairobi", "Lima", "Oslo", "somewhere abroad",
]
NAMES = [
    "Priya", "Tom", "Ana", "Jonas", "Mei", "Kofi", "Lucia", "Sam", "Irene",
    "Omar", "Hannah", "Dev", "Marta", "Felix", "Aiko", "Ruth", "Nikos",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _amount(rng: random.Random) -> str:
    cents = rng.choice(["00", "99", "49", "95", "50"])
    roll = rng.random()
    if roll < 0.12:
        return f"${rng.randint(1, 3)},{rng.randint(0, 999):03d}.{cents}"
    if roll < 0.30:
        return f"€{rng.randint(4, 400)}.{cents}"
    if roll < 0.40:
        return f"£{rng.randint(4, 300)}.{cents}"
    return f"${rng.randint(4, 499)}.{cents}"


def _order(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.5:
        return f"#{rng.randint(100000, 999999)}"
    if style < 0.8:
        return f"FK-{rng.randint(10000, 99999)}"
    return f"number {rng.randint(2000000, 9999999)}"


def _digits(rng: random.Random) -> str:
    return str(rng.randint(2, 9))


SLOTS = {
    "product": PRODUCTS,
    "product2": PRODUCTS,
    "gadget": GADGETS,
    "plan": PLANS,
    "span": SPANS,
    "ago": AGO_SPANS,
    "device": DEVICES,
    "browser": BROWSERS,
    "feature": FEATURES,
    "error": ERRORS,
    "paymsg": PAY_MESSAGES,
    "accmsg": ACCOUNT_MESSAGES,
    "trackmsg": TRACKING_MESSAGES,
    "country": COUNTRIES,
    "city": CITIES,
    "name": NAMES,
    "day": WEEKDAYS,
    "amount": _amount,
    "amount2": _amount,
    "order": _order,
    "n": _digits,
}

# --------------------------------------------------------------------------- #
# Message parts
# --------------------------------------------------------------------------- #

OPENERS = [
    "Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Good afternoon,",
    "Hello team,", "Dear support,", "Hi support team,", "Hi!", "Hello.",
    "Hey there!", "Quick question.", "Sorry to bother you.", "Hi, it's {name}.",
    "Hello, {name} here.", "Urgent:",
]
CLOSERS = [
    "Thanks.", "Thank you!", "Thanks in advance.", "Any help is appreciated.",
    "Please advise.", "Cheers.", "Regards, {name}.", "Thanks, {name}.",
    "Best wishes, {name}.", "Please help!", "Thank you for your time.",
    "Looking forward to your reply.", "Kind regards.", "Many thanks!",
]
# Background sentences that do not decide the team; drawn for every label.
CONTEXTS = [
    "I ordered a {product} {ago}.",
    "I have been a customer for {n} years.",
    "This is about order {order}.",
    "This is my second message about this.",
    "I already tried contacting you by phone.",
    "I'm using the {plan} on my {device}.",
    "I paid {amount} for it.",
    "The {product} itself is great, by the way.",
    "I bought the {product} as a gift.",
    "My last parcel arrived without problems.",
    "I updated the app {ago}.",
    "I log in with my work email.",
    "Your chat assistant could not help me.",
    "I'm travelling until {day}.",
    "My partner placed the order, but it is under my name.",
]

# Each label has "easy" intents (its own typical vocabulary) and "hard" intents
# that borrow another team's words while the request still belongs to the label.
INTENTS = {
    "billing": {
        "easy": [
            "I was charged {amount} twice for order {order}.",
            "Why was my card billed {amount} this month when the {plan} costs less?",
            "Can you send me an invoice for order {order}? I need it for my expense report.",
            "I returned the {product} {ago} and I'm still waiting for my refund of {amount}.",
            "There is a charge of {amount} on my bank statement that I don't recognise.",
            "The discount code did not apply, so I paid the full {amount}.",
            "Please stop the automatic renewal of my {plan} before I'm charged again.",
            "How do I update the credit card used to pay for my {plan}?",
            "Is sales tax included in the {amount} price or added at checkout?",
            "Can I switch my {plan} to yearly billing and get the cheaper rate?",
            "My card keeps getting declined even though it has enough money on it.",
            "I need a receipt with my company's VAT number on it for order {order}.",
            "Can I pay for order {order} in instalments instead of all at once?",
            "You billed me {amount} for the {plan} but I downgraded {ago}.",
            "Do you accept PayPal or bank transfer as a payment method?",
            "I was promised a credit of {amount} on my next bill, where is it?",
            "Could you refund the difference? The {product} dropped to {amount2} a day after I bought it.",
            "Why is there a pending authorisation of {amount} on my card?",
            "The price on the invoice, {amount}, doesn't match the price at checkout.",
            "I'd like a partial refund because the {product} was missing a part.",
        ],
        "hard": [
            "The app crashed during checkout and now I see two charges of {amount}.",
            "I deleted my account {ago} but you still charged my card {amount}.",
            "My parcel never arrived, so please refund the {amount} to my card.",
            "I paid {amount} for express shipping and the {product} came late, can I get that fee back?",
            "After the app update I was billed for the {plan} twice.",
            "I was charged a {amount} delivery fee although shipping was supposed to be free.",
            "Someone got into my account and bought a {product} with my saved card, I want the money back.",
            "The website showed \"{paymsg}\" but the {amount} was still taken from my bank account.",
            "I cancelled the order before it shipped, when do I get my {amount} back?",
            "I closed my old login and opened a new one, but both are being charged for the {plan}.",
            "The tracking says returned to sender, so I'd like a refund to my original payment method.",
            "My subscription renewed even though the app said it was cancelled, please refund {amount}.",
            "The page froze when I clicked pay and I got charged {amount} without an order confirmation.",
            "Since I can't log in anymore, please just cancel the {plan} billing and refund this month.",
        ],
    },
    "shipping": {
        "easy": [
            "Where is my order {order}? The tracking hasn't updated for {span}.",
            "The {product} arrived damaged, the box was completely crushed.",
            "Can I change the delivery address for order {order}? It hasn't shipped yet.",
            "The tracking says delivered but the {product} was never at my door.",
            "Do you ship to {country}, and how long does delivery take?",
            "I ordered a {product} but received a {product2} instead.",
            "My parcel has been stuck at the depot for {span}.",
            "Only half of order {order} arrived, the {product} is missing.",
            "Can I collect order {order} from a pickup point instead of home delivery?",
            "How do I send the {product} back? I need a return label.",
            "The courier left my parcel outside in the rain.",
            "Could you deliver order {order} after {day}? I'm away until then.",
            "The delivery driver said he couldn't find my building, when will he try again?",
            "It's been {span} and my {product} still shows \"{trackmsg}\".",
            "Is it possible to get express delivery on order {order}?",
            "Which courier is delivering my {product}, and is there a tracking number?",
            "Two of my packages were delivered to my neighbour by mistake.",
            "The estimated delivery date for the {product} keeps moving back.",
            "Can you combine my two orders into one shipment?",
            "My package was returned to your warehouse, can you send it out again?",
        ],
        "hard": [
            "I paid {amount} for next-day delivery and the {product} still hasn't shipped after {span}.",
            "I updated my address in my account settings but order {order} still went to the old address.",
            "The tracking page just shows \"{error}\", so I have no idea where my parcel is.",
            "The app notification said my order was delivered, but nothing arrived.",
            "I was refunded for the missing item but the rest of order {order} never showed up either.",
            "My {gadget} arrived broken and won't turn on, how do I ship it back for a replacement?",
            "The invoice shows a different delivery address than the one I entered.",
            "I got an email saying my order shipped, but the tracking number doesn't work on the courier's site.",
            "Can I change the delivery address after paying, or is it too late?",
            "My order confirmation email never arrived, has order {order} shipped?",
            "The customs office wants {amount} before they release my parcel, is it on its way?",
            "After I logged in I saw that order {order} is still marked as \"processing\" after {span}.",
            "The charger is missing from the box of my {gadget}, can you post it separately?",
            "The checkout gave me a delivery date of {day}, but the parcel is still in the warehouse.",
        ],
    },
    "account": {
        "easy": [
            "I can't log in, the password reset email never arrives.",
            "How do I change the email address on my account?",
            "Please delete my account and all the personal data you hold about me.",
            "My account is locked after too many failed login attempts.",
            "I have two accounts, can you merge them into one?",
            "How do I turn on two-factor authentication?",
            "Someone logged into my account from {city}, I think I was hacked.",
            "Can I change my username? I don't like the one I picked.",
            "I need to update the phone number linked to my profile.",
            "I forgot my password and no longer have access to that email address.",
            "Please unsubscribe me from your marketing emails.",
            "How do I download a copy of my personal data?",
            "I want to change the name on my profile after getting married.",
            "Can I share my account with my family, or does each person need a login?",
            "The login screen says \"{accmsg}\" even though my password is correct.",
            "How do I sign out of all devices at once?",
            "I never created an account but I keep getting welcome emails.",
            "Can I reactivate the account I closed {ago}?",
            "Please update my date of birth, it was entered wrong.",
            "I'd like to change my security questions.",
        ],
        "hard": [
            "How do I remove my saved credit card from my profile?",
            "I want to add my partner as a second user on the {plan}.",
            "My order history has disappeared from my profile.",
            "The verification code never reaches my {device}, so I can't sign in.",
            "Since the app update it keeps logging me out and asking for my password.",
            "I changed my email, but my invoices are still sent to the old address.",
            "I want to use the same login on the app and on the website, how do I link them?",
            "Someone changed my delivery address and password, please lock my account.",
            "My business account should be converted to a personal one, I no longer pay through the company.",
            "I see a purchase of a {product} in my account that I didn't make, who has access to my login?",
            "I can't see the {plan} on my account even though I'm still paying for it.",
            "The password reset link says \"{error}\" every time I open it.",
            "Can you change the default shipping address stored in my account?",
            "I get the error \"{accmsg}\" when I try to log in on my {device}.",
        ],
    },
    "technical": {
        "easy": [
            "The app crashes every time I open it on my {device}.",
            "The website shows \"{error}\" when I open the {feature}.",
            "Pages load very slowly in {browser}, it takes almost a minute.",
            "The {feature} does nothing when I tap it.",
            "After the latest update the app drains my battery really fast.",
            "Notifications stopped working on my {device} {ago}.",
            "The app is stuck on the loading screen on my {device}.",
            "Product images don't show up in {browser}, I just see empty boxes.",
            "The {feature} disappeared after I updated the app.",
            "Is the app compatible with my {device}? It won't install.",
            "The text overlaps the buttons when I use dark mode.",
            "The site keeps freezing when I scroll through the {feature}.",
            "Your app uses almost 2 GB of storage, is that a bug?",
            "The companion app for my {gadget} won't pair with my {device} over bluetooth.",
            "The {feature} shows another language even though my phone is set to English.",
            "The search results are empty whatever I type.",
            "The app closes by itself when I switch to landscape mode.",
            "I see a blank white screen when I open the website in {browser}.",
            "The firmware update for my {gadget} fails halfway through.",
            "The video in the product description won't play on my {device}.",
        ],
        "hard": [
            "The checkout page freezes when I press pay, so I can't finish buying the {product}.",
            "The login button is greyed out in the app on my {device}.",
            "The tracking page won't load on my {device}, it just spins forever.",
            "The button to download my invoice gives \"{error}\" in {browser}.",
            "When I enter my card details the form clears itself and nothing happens.",
            "The order history page crashes the app on my {device}.",
            "The page to change my password shows a blank screen in {browser}.",
            "The delivery date picker at checkout doesn't open on my {device}.",
            "The {plan} features don't unlock in the app even after I restart it.",
            "The app shows prices in the wrong currency and the layout is broken.",
            "Adding a {product} to the cart shows \"{error}\" on my {device}.",
            "The address autocomplete at checkout stopped working in {browser}.",
            "The profile photo upload fails with \"{error}\" on my {device}.",
            "The payment page won't load on my {device}, it just shows a spinning wheel.",
        ],
    },
}

# Side remarks: a minor second topic that does NOT decide the team.  They are
# only ever attached to messages of a *different* label, which makes bag-of-words
# shortcuts unreliable while the main request still determines the route.
ASIDES = {
    "billing": [
        "I also noticed the price went up, but that's not why I'm writing.",
        "(The refund from my last return came through fine, by the way.)",
        "Not urgent, but my last invoice had a typo in my name.",
        "P.S. I paid by card, in case that matters.",
        "Separately, I'll ask about my bill another time.",
        "Side note: the {amount} charge itself looks right.",
    ],
    "shipping": [
        "The delivery itself was quick, no complaints there.",
        "P.S. the parcel arrived on time, thanks for that.",
        "Also, my other order is still on its way, but that's fine.",
        "Side note: the courier was very friendly.",
        "Not related, but the box was much bigger than needed.",
        "I'll ask about the delivery date separately.",
    ],
    "account": [
        "I'm still logged in on my {device}, so that part works.",
        "P.S. I already reset my password, that's not the problem.",
        "Also, my profile picture looks odd, but never mind.",
        "Side note: I have two-factor login turned on.",
        "Not related, but I'd like to change my username at some point.",
        "My account email is the same one I'm writing from.",
    ],
    "technical": [
        "The app has been a bit slow lately too, but that's minor.",
        "P.S. the website works fine on my {device}.",
        "Also, the {feature} looks strange since the update, not urgent.",
        "Side note: the app crashed once last week, but it's fine now.",
        "Not related, but your site is much faster than it used to be.",
        "I'm on the latest version of the app, if that helps.",
    ],
}

# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #

_SLOT_RE = re.compile(r"(\b[aA] )?\{(\w+)\}")
_WORD_RE = re.compile(r"[A-Za-z]{5,}")


def fill(template: str, rng: random.Random) -> str:
    """Replace every ``{slot}`` in ``template`` with a random filler."""

    def repl(match: re.Match[str]) -> str:
        article, name = match.group(1) or "", match.group(2)
        source = SLOTS[name]
        value = source(rng) if callable(source) else rng.choice(source)
        if article and value[0].lower() in "aeiou":
            article = article[0] + "n "  # "a air fryer" -> "an air fryer"
        return article + value

    return _SLOT_RE.sub(repl, template)


def add_typo(text: str, rng: random.Random) -> str:
    """Introduce one small typo (swap, drop or double a letter) in a longer word."""
    words = list(_WORD_RE.finditer(text))
    if not words:
        return text
    m = rng.choice(words)
    w = m.group(0)
    i = rng.randint(1, len(w) - 2)
    kind = rng.random()
    if kind < 0.4:
        w = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    elif kind < 0.75:
        w = w[:i] + w[i + 1:]
    else:
        w = w[:i] + w[i] + w[i:]
    return text[: m.start()] + w + text[m.end():]


def _join(opener: str, rest: str) -> str:
    if opener.endswith((",", ":")) and not re.match(r"I\b|I'", rest):
        rest = rest[0].lower() + rest[1:]
    return f"{opener} {rest}"


def intent_templates(label: str, kind: str, split: str) -> list[str]:
    """Intent templates usable for ``split``.

    Every ``HELD_OUT_EVERY``-th template is held out of the training split, so
    validation and test also contain phrasings the model has never seen.
    """
    templates = INTENTS[label][kind]
    if split != "train":
        return templates
    return [t for i, t in enumerate(templates) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]


def make_message(label: str, rng: random.Random, split: str = "train") -> str:
    kind = "hard" if rng.random() < P_HARD else "easy"
    parts = [fill(rng.choice(intent_templates(label, kind, split)), rng)]
    if rng.random() < P_CONTEXT:
        context = fill(rng.choice(CONTEXTS), rng)
        if rng.random() < 0.5:
            parts.insert(0, context)
        else:
            parts.append(context)
    if rng.random() < P_ASIDE:
        other = rng.choice([lab for lab in LABELS if lab != label])
        aside = fill(rng.choice(ASIDES[other]), rng)
        if rng.random() < 0.3:
            parts.insert(0, aside)
        else:
            parts.append(aside)
    if rng.random() < P_CLOSER:
        parts.append(fill(rng.choice(CLOSERS), rng))
    text = " ".join(parts)
    if rng.random() < P_OPENER:
        text = _join(fill(rng.choice(OPENERS), rng), text)
    # Casual styles: drop the final full stop, write questions without "?".
    if rng.random() < 0.10 and text.endswith("."):
        text = text[:-1]
    if rng.random() < P_TYPO:
        text = add_typo(text, rng)
    if rng.random() < P_LOWERCASE:
        text = text.lower()
    return text


def generate(seed: int = SEED) -> dict[str, list[tuple[str, str]]]:
    """Return ``{split: [(text, label), ...]}`` with balanced texts, unique across splits."""
    rng = random.Random(seed)
    seen: set[str] = set()  # normalised texts, used for membership only
    splits: dict[str, list[tuple[str, str]]] = {}
    for split, per_label in SPLIT_SIZES:
        rows: list[tuple[str, str]] = []
        # Interleave labels so that no label gets "first pick" of the phrasing space.
        for _ in range(per_label):
            for label in LABELS:
                for _attempt in range(1000):
                    text = make_message(label, rng, split)
                    key = " ".join(text.lower().split())
                    if MIN_WORDS <= len(text.split()) <= MAX_WORDS and key not in seen:
                        seen.add(key)
                        rows.append((text, label))
                        break
                else:  # pragma: no cover - only if the templates run dry
                    raise RuntimeError(f"could not generate a unique {label} text for {split}")
        rng.shuffle(rows)
        splits[split] = rows
    return splits


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    default_dir = Path(__file__).resolve().parent.parent / "finetune_kit" / "demo_data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", type=Path, default=default_dir,
        help=f"where to write train/validation/test CSV files (default: {default_dir})",
    )
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in generate().items():
        path = args.output_dir / f"{split}.csv"
        write_csv(path, rows)
        print(f"wrote {len(rows):4d} rows to {path}")


if __name__ == "__main__":
    main()
