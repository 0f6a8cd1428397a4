"""Sixty questions a Python developer asks about installed third-party packages, over their own
source and docstrings (nobody here wrote them), with where each answer is and how it is graded.

Each question names its package; the answer's first line must match `right` (case-insensitive
regex search) and not `wrong`: a value listed after a wrong lead is wrong. Shapes are mixed on
purpose: short numbers, words, identifiers, symbols, yes/no, lists, so that no strategy tuned to
one answer shape does well here. Read from the package versions pinned by this project's install
(bench/RESULTS.md names them); each answer was checked against the file named.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGES = ("httpx", "urllib3", "requests", "uvicorn", "starlette", "jinja2", "click", "datasketch", "tqdm",
            "h11", "filelock", "packaging")

NO = r"^\W*no\b|\bnot\b|n't\b|\bnever\b|\bfalse\b|\bdisabled\b"
YES_LEAD = r"^\W*yes\b"
UNIT_IT = r"""['"`]it['"`]|\bit/s\b|^\W*it\W*$|\bis\W+it\W*$"""


@dataclass(frozen=True)
class RealQuestion:
    question: str
    right: str
    where: str  # package/file holding the answer
    shape: str  # number, word, identifier, symbol, yes/no, list
    wrong: str | None = None


QUESTIONS = [
    # httpx/_config.py, _client.py, _models.py
    RealQuestion("What is the default timeout, in seconds, of an httpx client?", r"\b5(\.0)?\b", "httpx/_config.py",
                 "number"),
    RealQuestion("How many redirects does httpx follow at most by default?", r"\b20\b", "httpx/_config.py", "number"),
    RealQuestion("What is the default maximum number of connections in httpx's connection pool limits?",
                 r"\b100\b", "httpx/_config.py", "number"),
    RealQuestion("How many keep-alive connections does httpx allow by default?", r"\b20\b", "httpx/_config.py",
                 "number"),
    RealQuestion("Does an httpx Client follow redirects by default?", NO, "httpx/_client.py", "yes/no", YES_LEAD),
    RealQuestion("Which exception does httpx's Response.raise_for_status raise for an error status code?",
                 r"HTTPStatusError", "httpx/_models.py", "identifier"),
    # urllib3/util/retry.py
    RealQuestion("How many times does urllib3 retry a request by default (Retry.DEFAULT)?", r"\b3\b",
                 "urllib3/util/retry.py", "number"),
    RealQuestion("What is urllib3's default maximum backoff time for retries, in seconds?", r"\b120\b",
                 "urllib3/util/retry.py", "number"),
    RealQuestion("Which HTTP status codes make urllib3 retry when a Retry-After header is present?",
                 r"(?=.*(?<!\d)413(?!\d))(?=.*(?<!\d)429(?!\d))(?=.*(?<!\d)503(?!\d))", "urllib3/util/retry.py",
                 "list"),
    RealQuestion("Which headers does urllib3 remove from a request on a redirect to another host by default?",
                 r"(?=.*cookie)(?=.*\bauthorization)(?=.*proxy-authorization)", "urllib3/util/retry.py", "list"),
    RealQuestion("Is POST one of the HTTP methods urllib3 retries by default?", NO, "urllib3/util/retry.py",
                 "yes/no", YES_LEAD),
    RealQuestion("What is the default total number of retries of a urllib3 Retry object created without arguments?",
                 r"\b10\b", "urllib3/util/retry.py", "number"),
    # requests/adapters.py, models.py, exceptions.py
    RealQuestion("What is the default connection pool size of a requests HTTPAdapter?", r"\b10\b",
                 "requests/adapters.py", "number"),
    RealQuestion("How many retries does a requests HTTPAdapter make by default?", r"\b0\b|\bno(ne)? retr|\bzero\b",
                 "requests/adapters.py", "number"),
    RealQuestion("How many redirects does requests allow before giving up, by default?", r"\b30\b",
                 "requests/models.py", "number"),
    RealQuestion("What chunk size does requests use by default in Response.iter_lines?", r"\b512\b",
                 "requests/models.py", "number"),
    RealQuestion("Which exception does requests raise when a request exceeds the maximum number of redirects?",
                 r"TooManyRedirects", "requests/exceptions.py", "identifier"),
    RealQuestion("What is the chunk size requests reads response content in when it is consumed (CONTENT_CHUNK_SIZE)?",
                 r"10\s*\*\s*1024|\b10240\b|\b10\s*(kb|kib|k)\b", "requests/models.py", "number"),
    # uvicorn/config.py
    RealQuestion("What port does uvicorn listen on by default?", r"\b8000\b", "uvicorn/config.py", "number"),
    RealQuestion("What host does uvicorn bind to by default?", r"127\.0\.0\.1|localhost", "uvicorn/config.py",
                 "symbol"),
    RealQuestion("What is uvicorn's default backlog, the maximum number of pending connections?", r"\b2048\b",
                 "uvicorn/config.py", "number"),
    RealQuestion("How many seconds does uvicorn keep an idle keep-alive connection open by default?", r"\b5\b",
                 "uvicorn/config.py", "number"),
    RealQuestion("What is uvicorn's default WebSocket ping interval, in seconds?", r"\b20(\.0)?\b",
                 "uvicorn/config.py", "number"),
    RealQuestion("What is the default maximum WebSocket message size in uvicorn?",
                 r"16\s*\*\s*1024\s*\*\s*1024|16777216|\b16\s*(mb|mib|megabytes?)\b", "uvicorn/config.py", "number"),
    RealQuestion("How long does uvicorn wait between reloads by default (reload_delay), in seconds?",
                 r"\b0?\.25\b", "uvicorn/config.py", "number"),
    RealQuestion("Does uvicorn write an access log by default?", r"^\W*yes\b|\btrue\b|\benabled\b|\bdoes\b(?!\s+not)",
                 "uvicorn/config.py", "yes/no", r"^\W*no\b|\bnot\b|n't"),
    # starlette/middleware/gzip.py, cors.py, responses.py
    RealQuestion("What is the minimum response size, in bytes, that starlette's GZipMiddleware compresses?",
                 r"\b500\b", "starlette/middleware/gzip.py", "number"),
    RealQuestion("What compression level does starlette's GZipMiddleware use by default?", r"\b9\b",
                 "starlette/middleware/gzip.py", "number"),
    RealQuestion("How long, in seconds, may browsers cache a CORS preflight response under starlette's "
                 "CORSMiddleware by default (max_age)?", r"\b600\b", "starlette/middleware/cors.py", "number"),
    RealQuestion("Which HTTP methods does starlette's CORSMiddleware allow by default?", r"\bGET\b",
                 "starlette/middleware/cors.py", "list", r"\b(POST|PUT|DELETE)\b"),
    RealQuestion("Does starlette's CORSMiddleware allow credentials by default?", NO, "starlette/middleware/cors.py",
                 "yes/no", YES_LEAD),
    RealQuestion("Which starlette response class sends a plain text body?", r"PlainTextResponse",
                 "starlette/responses.py", "identifier"),
    # jinja2/defaults.py, environment.py, exceptions.py
    RealQuestion("What string starts a block tag in Jinja2 templates by default?", r"\{%", "jinja2/defaults.py",
                 "symbol"),
    RealQuestion("What string starts a comment in Jinja2 templates by default?", r"\{#", "jinja2/defaults.py",
                 "symbol"),
    RealQuestion("What string ends a variable expression in Jinja2 templates by default?", r"\}\}",
                 "jinja2/defaults.py", "symbol"),
    RealQuestion("How many templates does a Jinja2 Environment keep in its cache by default?", r"\b400\b",
                 "jinja2/environment.py", "number"),
    RealQuestion("Is autoescaping enabled by default in a Jinja2 Environment?", NO, "jinja2/environment.py",
                 "yes/no", YES_LEAD),
    RealQuestion("Does Jinja2 remove the first newline after a block tag by default (trim_blocks)?", NO,
                 "jinja2/defaults.py", "yes/no", YES_LEAD),
    RealQuestion("Which exception does Jinja2 raise when a template cannot be found?", r"TemplateNotFound",
                 "jinja2/exceptions.py", "identifier"),
    # click/formatting.py, utils.py, exceptions.py
    RealQuestion("What is the maximum width of click's help output when none is set?", r"\b80\b",
                 "click/formatting.py", "number"),
    RealQuestion("What is the narrowest width click's HelpFormatter uses for help text?", r"\b50\b",
                 "click/formatting.py", "number"),
    RealQuestion("How many characters long is the short help click makes from a command's help text, by default?",
                 r"\b45\b", "click/utils.py", "number"),
    RealQuestion("Which click exception signals that a parameter's value is invalid?", r"BadParameter",
                 "click/exceptions.py", "identifier"),
    # datasketch/minhash.py, lsh.py
    RealQuestion("How many permutation functions does a datasketch MinHash use by default?", r"\b128\b",
                 "datasketch/minhash.py", "number"),
    RealQuestion("What is the default seed of a datasketch MinHash?", r"\b1\b", "datasketch/minhash.py", "number"),
    RealQuestion("What Jaccard threshold does datasketch's MinHashLSH use by default?", r"\b0?\.9\b",
                 "datasketch/lsh.py", "number"),
    RealQuestion("What are the default weights of false positives and false negatives in datasketch's MinHashLSH?",
                 r"0?\.5\D+0?\.5", "datasketch/lsh.py", "list"),
    # tqdm/std.py
    RealQuestion("What is tqdm's default minimum progress display update interval, in seconds (mininterval)?",
                 r"\b0?\.1\b", "tqdm/std.py", "number"),
    RealQuestion("What is tqdm's default maximum update interval, in seconds (maxinterval)?", r"\b10(\.0)?\b",
                 "tqdm/std.py", "number"),
    RealQuestion("What is tqdm's default smoothing factor for speed estimates?", r"\b0?\.3\b", "tqdm/std.py",
                 "number"),
    RealQuestion("What unit does a tqdm progress bar show by default?", UNIT_IT, "tqdm/std.py", "word"),
    RealQuestion("Where does tqdm write its progress bar by default?", r"stderr", "tqdm/std.py", "identifier"),
    RealQuestion("Which tqdm function is a shortcut for tqdm(range(...))?", r"\btrange\b", "tqdm/std.py",
                 "identifier"),
    RealQuestion("What divisor does tqdm use for unit scaling by default (unit_divisor)?", r"\b1000\b",
                 "tqdm/std.py", "number"),
    # h11/_connection.py, _util.py
    RealQuestion("What is h11's default maximum size of an incomplete event, in bytes?",
                 r"16\s*\*\s*1024|\b16384\b|\b16\s*(kb|kib)\b", "h11/_connection.py", "number"),
    RealQuestion("Which h11 exception means the remote peer violated the HTTP protocol?", r"RemoteProtocolError",
                 "h11/_util.py", "identifier"),
    # filelock/_core/_lock.py, _errors.py
    RealQuestion("What is the default timeout of a filelock FileLock, and what does it mean?",
                 r"-\s?1|forever|indefinitely|infinite|no timeout", "filelock/_core/_lock.py", "number"),
    RealQuestion("How often, in seconds, does filelock poll for a lock by default (poll_interval)?",
                 r"\b0?\.05\b", "filelock/_core/_lock.py", "number"),
    RealQuestion("Which exception does filelock raise when a lock could not be acquired in time?", r"\bTimeout\b",
                 "filelock/_core/_errors.py", "identifier"),
    # packaging/version.py
    RealQuestion("Which exception does packaging raise for a version string it cannot parse?", r"InvalidVersion",
                 "packaging/version.py", "identifier"),
]
assert len(QUESTIONS) == 60, len(QUESTIONS)
