"""How the plugin wraps fairseq's functions at import: once, whatever the number of imports."""


def wrap_once(owner, name: str, wrapper, mark: str) -> None:
    """Replace ``owner.name`` by ``wrapper(owner.name)`` unless a wrapper marked ``mark`` is already
    there (fairseq's own decorators set ``__wrapped__``, hence a mark of the caller's own)."""
    original = getattr(owner, name)
    if getattr(original, mark, False):
        return
    wrapped = wrapper(original)
    setattr(wrapped, mark, True)
    setattr(owner, name, wrapped)
