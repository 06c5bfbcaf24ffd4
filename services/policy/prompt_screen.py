"""Screen custom prompt text before it reaches the model.

A custom prompt is a short free-text addition ("smiling, glasses"). It is refused, with a
reason a person can act on, when it is too long, names a brand or trademark, names another
person (celebrities, politicians, other public figures), or asks for unsafe content
(sexual content, minors, violence, hate, drugs, weapons, forged documents).

Matching is on normalised words: case, accents, punctuation and common digit-for-letter
swaps ("n1ke") are folded away, and phrases match on word boundaries, so "nike" is caught in
"Nike-logo" but "hiking" is not. Brands that are also ordinary words ("apple", "shell",
"gap") are listed only with the words that make them a brand ("apple logo"). Surnames alone
are not listed (too many are ordinary words or the customer's own family name); full names
and unambiguous single names are. The lists are the project's own and a floor, not a
complete catalogue of the world; a capitalised name after "looking like", "as", "style of"
is refused whether or not the lists know it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from services.policy.limits import limits


class Category(StrEnum):
    OK = "ok"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    INVALID = "invalid"
    BRAND = "brand"
    PERSON = "person"
    MINOR = "minor"
    UNSAFE = "unsafe"


@dataclass(frozen=True, slots=True)
class ScreenResult:
    ok: bool
    category: Category
    # Empty when ok; otherwise a sentence the person can act on.
    reason: str
    # The text to append to the prompt (whitespace collapsed) when ok; "" otherwise.
    text: str
    matched: str = ""


# ---- lists (comma-separated entries; each entry is a word or a phrase) ---------------------

BRANDS = """
adidas, nike, reebok, puma, asics, new balance, under armour, lululemon, patagonia,
the north face, columbia sportswear, timberland, converse, vans sneakers, fila, umbro,
champion hoodie, skechers, gucci, prada, louis vuitton, chanel, hermes, dior, versace,
armani, burberry, balenciaga, fendi, givenchy, valentino garavani, saint laurent, ysl,
bottega veneta, celine, loewe, moncler, off-white, supreme, stone island, ralph lauren,
tommy hilfiger, calvin klein, hugo boss, lacoste, michael kors, kate spade, tory burch,
marc jacobs, dolce & gabbana, dolce gabbana, d&g, alexander mcqueen, vivienne westwood,
stella mccartney, miu miu, tiffany & co, tiffany and co, cartier, rolex, omega watch,
patek philippe, audemars piguet, tag heuer, breitling, hublot, swatch, casio, g-shock,
seiko, tissot, longines, panerai, richard mille, ray-ban, rayban, ray ban, oakley,
persol, warby parker, levis, wrangler, diesel jeans, abercrombie, hollister,
american eagle, uniqlo, zara, h&m, primark, gap logo, old navy, banana republic, j.crew,
jcrew, everlane, allbirds, dr martens, doc martens, birkenstock, crocs, ugg, hanes,
fruit of the loom, carhartt, dickies, brooks brothers, hermes scarf, longchamp, mulberry,
coca cola, coca-cola, coke can, pepsi, sprite, fanta, red bull, monster energy, gatorade,
starbucks, dunkin, mcdonalds, burger king, kfc, taco bell, pizza hut, dominos, nestle,
nescafe, heineken, budweiser, corona beer, guinness, jack daniels, johnnie walker,
absolut vodka, smirnoff, bacardi, marlboro, camel cigarettes,
apple logo, apple watch, iphone, ipad, macbook, airpods, imac, samsung, galaxy phone,
google logo, google pixel, microsoft, xbox, playstation, sony logo, nintendo, intel,
nvidia, geforce, alienware, lenovo, thinkpad, hewlett packard, huawei, xiaomi, oneplus,
motorola, blackberry phone, nokia, logitech, razer, bose, beats by dre, sennheiser, jbl,
gopro, canon camera, nikon, fujifilm, leica, hasselblad, polaroid, kodak,
tesla, ferrari, lamborghini, porsche, mercedes, mercedes-benz, bmw, audi, volkswagen,
toyota, honda logo, ford mustang, chevrolet, corvette, jeep, land rover, range rover,
bentley, rolls royce, rolls-royce, aston martin, maserati, bugatti, mclaren,
harley davidson, harley-davidson, ducati, kawasaki,
facebook, instagram, whatsapp, tiktok, snapchat, twitter, youtube, linkedin, reddit,
pinterest, netflix, spotify, amazon logo, amazon prime, ebay, alibaba, uber, lyft, airbnb,
paypal, mastercard, american express, amex, goldman sachs, jp morgan, jpmorgan,
morgan stanley, deloitte, pwc, kpmg, ernst & young, mckinsey, accenture, ibm, oracle,
salesforce, openai, chatgpt, midjourney,
disney, pixar, marvel, dc comics, star wars, jedi, darth vader, harry potter, hogwarts,
pokemon, pikachu, mickey mouse, minnie mouse, hello kitty, barbie, lego, transformers,
batman, superman, spider-man, spiderman, iron man, captain america, avengers, hulk,
wonder woman, harley quinn, simpsons, shrek, minions, sesame street, muppets,
looney tunes, bugs bunny, snoopy, game of thrones, lord of the rings, hobbit, james bond,
playboy, hooters,
nfl, nba, mlb, nhl, fifa, uefa, premier league, olympic rings, real madrid,
fc barcelona, manchester united, liverpool fc, chelsea fc, arsenal fc, juventus,
bayern munich, psg, lakers, yankees, dallas cowboys, red sox
"""

PEOPLE = """
taylor swift, beyonce, beyonce knowles, rihanna, lady gaga, ariana grande, billie eilish,
selena gomez, justin bieber, ed sheeran, adele, harry styles, dua lipa, katy perry,
miley cyrus, shakira, jennifer lopez, nicki minaj, cardi b, doja cat, olivia rodrigo,
the weeknd, bruno mars, kanye west, kanye, kim kardashian, kylie jenner, kendall jenner,
khloe kardashian, kourtney kardashian, paris hilton, snoop dogg, eminem, jay-z,
post malone, travis scott, bad bunny, lil nas x, elton john, michael jackson,
freddie mercury, david bowie, elvis presley, elvis, frank sinatra, whitney houston,
mariah carey, celine dion, britney spears, christina aguilera, justin timberlake,
leonardo dicaprio, brad pitt, angelina jolie, tom cruise, tom hanks, will smith,
denzel washington, johnny depp, keanu reeves, robert downey jr, scarlett johansson,
jennifer lawrence, jennifer aniston, emma watson, emma stone, margot robbie, zendaya,
timothee chalamet, ryan gosling, ryan reynolds, chris hemsworth, chris evans, chris pratt,
henry cavill, gal gadot, natalie portman, anne hathaway, meryl streep, nicole kidman,
julia roberts, sandra bullock, cate blanchett, kate winslet, charlize theron, jessica alba,
megan fox, dwayne johnson, the rock, vin diesel, jason statham, arnold schwarzenegger,
sylvester stallone, bruce willis, morgan freeman, samuel l jackson, al pacino,
robert de niro, jack nicholson, harrison ford, mark wahlberg, matt damon, ben affleck,
george clooney, hugh jackman, daniel radcliffe, rupert grint, benedict cumberbatch,
tom holland, zac efron, pedro pascal, jason momoa, idris elba, michael b jordan,
chadwick boseman, lupita nyongo, viola davis, octavia spencer, halle berry,
kerry washington, tyra banks, naomi campbell, kate moss, gigi hadid, bella hadid,
cara delevingne, heidi klum, gisele bundchen, marilyn monroe, audrey hepburn, james dean,
charlie chaplin, oprah, oprah winfrey, ellen degeneres, jimmy fallon, jimmy kimmel,
stephen colbert, conan obrien, trevor noah, david letterman, joe rogan, howard stern,
mrbeast, mr beast, pewdiepie, logan paul, jake paul, kai cenat,
elon musk, jeff bezos, bill gates, mark zuckerberg, steve jobs, tim cook, sundar pichai,
satya nadella, warren buffett, jack ma, larry page, sergey brin, sam altman, jensen huang,
richard branson, sheryl sandberg, larry ellison, michael dell, peter thiel,
donald trump, trump, joe biden, biden, barack obama, obama, michelle obama,
hillary clinton, bill clinton, george w bush, george bush, kamala harris, mike pence,
bernie sanders, nancy pelosi, alexandria ocasio-cortez, ron desantis, nikki haley,
jd vance, vladimir putin, putin, xi jinping, kim jong un, kim jong-un,
volodymyr zelensky, zelensky, zelenskyy, emmanuel macron, macron, angela merkel, merkel,
olaf scholz, rishi sunak, boris johnson, keir starmer, theresa may, justin trudeau,
trudeau, narendra modi, recep tayyip erdogan, erdogan, benjamin netanyahu, netanyahu,
jair bolsonaro, bolsonaro, king charles, prince william, prince harry, kate middleton,
meghan markle, queen elizabeth, princess diana, pope francis, dalai lama,
greta thunberg, malala yousafzai, nelson mandela, martin luther king, abraham lincoln,
winston churchill, mahatma gandhi, adolf hitler, hitler, joseph stalin, stalin,
mao zedong, cristiano ronaldo, ronaldo, lionel messi, messi, neymar, kylian mbappe,
mbappe, erling haaland, david beckham, beckham, michael jordan, lebron james,
kobe bryant, stephen curry, shaquille oneal, serena williams, venus williams,
roger federer, federer, rafael nadal, novak djokovic, djokovic, tiger woods, usain bolt,
simone biles, michael phelps, tom brady, patrick mahomes, conor mcgregor, mike tyson,
muhammad ali, floyd mayweather, lewis hamilton, max verstappen, wayne gretzky,
travis kelce, albert einstein, einstein, stephen hawking, marie curie, isaac newton,
musk, bezos, zuckerberg, dicaprio, schwarzenegger, kardashian, kardashians
"""

MINORS = """
child, children, kid, kids, toddler, infant, babies, teen, teens, teenager, teenage,
underage, minors, a minor, schoolgirl, schoolboy, school girl, school boy, young girl,
young boy, little girl, little boy, loli, lolita, preteen, pre-teen, adolescent, juvenile,
12 year old, 13 year old, 14 year old, 15 year old, 16 year old, 17 year old,
12 years old, 13 years old, 14 years old, 15 years old, 16 years old, 17 years old
"""

UNSAFE = """
nude, naked, nudity, topless, bottomless, nsfw, porn, porno, pornographic, xxx, explicit,
erotic, erotica, sexual, sex, sexy, seductive, lingerie, underwear, bikini, see-through,
see through, nipple, nipples, breasts, boobs, genitals, penis, vagina, buttocks, onlyfans,
fetish, bdsm, bondage, stripper, strip club, provocative, sensual, hentai, cleavage,
gore, gory, blood, bloody, bleeding, wound, wounds, injured, corpse, dead body,
decapitated, mutilated, severed, murder, killing, suicide, self-harm, self harm, noose,
torture, gun, guns, pistol, rifle, shotgun, firearm, ak-47, ak47, weapon, weapons, knife,
machete, grenade, bomb, explosive, terrorist, terrorism, isis, al qaeda, swastika, nazi,
kkk, white power, confederate flag, hate symbol, racist, cocaine, heroin, meth,
methamphetamine, crack pipe, drugs, drug use, syringe, marijuana, cannabis, weed joint,
blackface, yellowface, mugshot, mug shot, police lineup, prison jumpsuit, handcuffs,
deepfake, fake id, passport photo, id card, drivers license, driving licence
"""

# A capitalised name after one of these is another person, whether or not the lists know
# them: "looking like Jane Roe", "in the style of John Doe", "as Jane Roe".
_NAME_AFTER = re.compile(
    r"\b(?:look(?:s|ing)?\s+like|resembl(?:e|es|ing)|lookalike\s+of|style\s+of|dressed\s+as|"
    r"impersonat(?:e|es|ing)|as|like)\s+(?:the\s+|a\s+young\s+)?"
    r"((?:[A-Z][\w'’.-]+)(?:\s+[A-Z][\w'’.-]+)+)"
)

# ---- normalisation and matching -------------------------------------------------------------

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_TOKEN = re.compile(r"[a-z0-9&]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_URL = re.compile(r"(?:https?://|www\.)", re.IGNORECASE)
_PROMPT_SYNTAX = re.compile(r"[<>{}\[\]|\\]")


def _fold(text: str) -> str:
    """Lower case, accents removed, apostrophes dropped ("McDonald's" -> "mcdonalds")."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.lower().replace("'", "").replace("’", "")


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(_fold(text)))


def _phrase_set(block: str) -> frozenset[tuple[str, ...]]:
    entries = (e.strip() for e in block.replace("\n", " ").split(","))
    return frozenset(t for t in (_tokens(e) for e in entries if e) if t)


BRAND_PHRASES = _phrase_set(BRANDS)
PEOPLE_PHRASES = _phrase_set(PEOPLE)
MINOR_PHRASES = _phrase_set(MINORS)
UNSAFE_PHRASES = _phrase_set(UNSAFE)
_MAX_WORDS = max(len(p) for p in BRAND_PHRASES | PEOPLE_PHRASES | MINOR_PHRASES | UNSAFE_PHRASES)


def _find(tokens: tuple[str, ...], phrases: frozenset[tuple[str, ...]]) -> str:
    for n in range(_MAX_WORDS, 0, -1):
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n] in phrases:
                return " ".join(tokens[i : i + n])
    return ""


def _find_any(text: str, phrases: frozenset[tuple[str, ...]]) -> str:
    """Match on the plain words, then on the words with digit-for-letter swaps undone
    ("n1ke"), and with separators inside words removed ("n-i-k-e", "n.i.k.e")."""
    plain = _tokens(text)
    found = _find(plain, phrases)
    if found:
        return found
    leet = tuple(t.translate(_LEET) for t in plain)
    found = _find(leet, phrases)
    if found:
        return found
    # Single letters strung together by separators: "n i k e" -> "nike".
    joined: list[str] = []
    run = ""
    for t in leet:
        if len(t) == 1:
            run += t
            continue
        if run:
            joined.append(run)
            run = ""
        joined.append(t)
    if run:
        joined.append(run)
    return _find(tuple(joined), phrases) if len(joined) != len(leet) else ""


_REASONS = {
    Category.BRAND: "mentions a brand or trademark ({m}); describe the clothing or setting "
    "without brand names",
    Category.PERSON: "names another person ({m}); the headshots can only show you",
    Category.MINOR: "refers to a child or a minor ({m}); that is not allowed",
    Category.UNSAFE: "asks for content that is not allowed in a headshot ({m})",
}


def screen_prompt(text: str | None, max_chars: int | None = None) -> ScreenResult:
    """Check a custom prompt. Empty text is fine (nothing is added).

    The gateway calls this at CreateOrder and CreatePreview and the generator again on
    every job, so a prompt the generator would refuse never reaches a GPU.
    """
    max_chars = limits().max_custom_prompt_chars if max_chars is None else max_chars
    if text is None or not text.strip():
        return ScreenResult(True, Category.EMPTY, "", "")
    if not isinstance(text, str):
        return ScreenResult(False, Category.INVALID, "custom prompt must be text", "")
    if len(text) > max_chars:
        return ScreenResult(
            False,
            Category.TOO_LONG,
            f"custom prompt is {len(text)} characters; the limit is {max_chars}",
            "",
        )
    if _CONTROL.search(text):
        return ScreenResult(
            False, Category.INVALID, "custom prompt contains control characters", ""
        )
    if _URL.search(text):
        return ScreenResult(False, Category.INVALID, "custom prompt must not contain links", "")
    if _PROMPT_SYNTAX.search(text):
        return ScreenResult(
            False,
            Category.INVALID,
            "custom prompt must be plain words (no <>, {}, [], | or \\)",
            "",
        )
    # Minors and unsafe content first: those are the refusals that matter most.
    for category, phrases in (
        (Category.MINOR, MINOR_PHRASES),
        (Category.UNSAFE, UNSAFE_PHRASES),
        (Category.PERSON, PEOPLE_PHRASES),
        (Category.BRAND, BRAND_PHRASES),
    ):
        found = _find_any(text, phrases)
        if found:
            return _refuse(category, found)
    named = _NAME_AFTER.search(text)
    if named:
        return _refuse(Category.PERSON, named.group(1))
    return ScreenResult(True, Category.OK, "", " ".join(text.split()))


def _refuse(category: Category, matched: str) -> ScreenResult:
    reason = "custom prompt " + _REASONS[category].format(m=f"'{matched}'")
    return ScreenResult(False, category, reason, "", matched)
