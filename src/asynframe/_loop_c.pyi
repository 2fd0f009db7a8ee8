# Private: the compiled ready-list dispatch used by asynframe._poller.
from typing import Any, Callable, Dict, List, Tuple

IMPLEMENTATION: str

def configure(
    chat_class: type,
    plain_socket: type,
    dispatch: Tuple[Any, ...],
    to_poll_flags: Callable[[int], int],
    reraised: Tuple[type, ...],
    disconnected: Any,
    touch: Callable[[Any], None],
    in_: int,
    out: int,
    pri: int,
    err: int,
    hup: int,
) -> Dict[str, Callable[..., Any]]: ...
def chat_push(self: Any, data: Any) -> None: ...
def chat_interest(obj: Any) -> int: ...
def dispatch(poller: Any, events: List[Tuple[int, int]], poll_semantics: bool) -> None: ...
