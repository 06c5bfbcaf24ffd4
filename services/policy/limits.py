"""The platform's limits: one name and one default each, read by every service.

The gateway refuses an order or a photo with these numbers, the generator enforces the same
ones on the jobs it gets, and the filter sizes top-up rounds by them, so a limit can never be
3 in one service and 4 in another. An operator changes one for the whole platform with one
environment variable, `HS_LIMIT_<NAME>` (the Kubernetes ConfigMap every service reads).
"""

from __future__ import annotations

import math
from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HS_LIMIT_", extra="ignore", frozen=True)

    # ---- photos of an order ----
    # 8-20 selfies: fewer do not show enough angles to train on, more add little.
    min_photos: int = 8
    max_photos: int = 20
    # Bytes are counted before anything is decoded; pixels are read from the header.
    max_photo_bytes: int = 20 * 1024 * 1024
    max_photo_pixels: int = 50_000_000
    min_photo_side: int = 160
    # Bytes of pixel memory the image decodes of one process may hold at once. Each decode
    # reserves what its header says it will need (JPEG decoded reduced to the size that is
    # kept) and waits for room; one that alone needs more is refused. 256 MiB keeps a
    # gateway inside its 1 GiB limit with six 12 MP photos decoding at once, and still
    # admits a 50 MP PNG on its own.
    decode_memory_bytes: int = 256 * 1024 * 1024

    # ---- what an order may ask for ----
    max_custom_prompt_chars: int = 200
    default_result_count: int = 100
    max_result_count: int = 200
    default_candidate_count: int = 64
    max_candidate_count: int = 1000

    # ---- the generation budget of one order ----
    # Rounds in all (round 0 plus top-ups); round indices run 0 .. max_rounds - 1. After
    # four the order delivers what passed: a LoRA that yields this few good images will not
    # be saved by a fifth round.
    max_rounds: int = 4
    # Candidates rendered over all rounds, as a multiple of the order's candidate_count...
    max_candidates_factor: float = 2.5
    # ...and never more than this many images for one order, whatever it asked for.
    max_images_per_order: int = 2000
    # A top-up round asks for what is missing at the pass rate seen so far, inflated by this
    # margin so one more round usually suffices...
    round_margin: float = 1.2
    # ...never fewer than this (a round has fixed overhead: LoRA swap, warm-up)...
    min_round: int = 16
    # ...and assumes this share passes before any candidate has (a neutral guess).
    prior_pass_rate: float = 0.5

    # ---- failed authentication (per gateway replica) ----
    # Failures one client address may have in a window before its calls are refused
    # unchecked until the window ends: room for a person mistyping a token, while a guesser
    # gets 20 guesses of 2^256 a minute.
    auth_failures_per_address: int = 20
    # The same for one key (its public key id; the admin token counts as one key), whatever
    # the addresses: higher, because reaching it locks that key's real holder out too.
    auth_failures_per_key: int = 100
    auth_failure_window_s: float = 60.0
    # Subjects remembered (least recently failing forgotten first): bounded memory.
    auth_throttle_subjects: int = 10_000

    # ---- preview ----
    max_preview_count: int = 4
    # How long a CreatePreview request_id is remembered: a retry inside it renders with the
    # same seed (the same images); after it, the id may be used again.
    preview_replay_hours: float = 24.0

    # ---- the public API ----
    # Largest gRPC message the gateway takes or sends; the proto's UploadPhotos comment
    # quotes it (a test keeps the two in step). Photos larger than this arrive in chunks.
    max_message_bytes: int = 8 * 1024 * 1024


@lru_cache(maxsize=1)
def limits() -> Limits:
    """The limits of this process (environment read once)."""
    return Limits()


def candidate_budget(candidate_count: int) -> int:
    """Images an order may render over all its rounds."""
    lim = limits()
    return min(lim.max_images_per_order, int(candidate_count * lim.max_candidates_factor + 0.999))


def next_round_size(
    passed: int, wanted: int, *, rounds_done: int, budget: int, generated: int
) -> int:
    """How many more candidates to render (0 = deliver what passed).

    `rounds_done`: rounds rendered so far (1 after the first); `budget`: images this order may
    still render; `generated`: images rendered so far, for the pass rate (the prior is used
    before any has passed). Asks for enough to reach `wanted` at the observed pass rate with a
    margin, never less than a worthwhile round, never past the budget or the last round.
    """
    lim = limits()
    if min(passed, wanted, rounds_done, budget, generated) < 0:
        raise ValueError("passed, wanted, rounds_done, budget and generated must be >= 0")
    missing = wanted - passed
    if missing <= 0 or budget <= 0 or rounds_done >= lim.max_rounds:
        return 0
    rate = lim.prior_pass_rate
    if generated and passed > 0:
        rate = passed / generated
    # A round that produced nothing says "the rate is low", not "the rate is 0".
    if generated and passed == 0:
        rate = min(lim.prior_pass_rate, 1.0 / (generated + 1))
    ask = math.ceil(missing / max(rate, 1e-3) * lim.round_margin)
    return int(min(budget, max(ask, lim.min_round)))
