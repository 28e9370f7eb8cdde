"""
Hypothesis strategies shared by ace-mail's tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

#: Pieces that make the hard cases of SMTP DATA likely: dots at the start of
#: lines, bare CRs and LFs, CRLFs, and CRs split from their LFs.
_PIECES = [b".", b"..", b"a", b"b c", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n."]


def messageBytes() -> st.SearchStrategy[bytes]:
    """
    @return: Messages made of lines that start with dots, end with bare
        CRs, bare LFs or CRLFs, or do not end at all, plus arbitrary bytes.
    """
    piece = st.one_of(st.sampled_from(_PIECES), st.binary(max_size=6))
    return st.lists(piece, max_size=40).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> list[bytes]:
    """
    @param data: The strategy for the whole.
    @return: The bytes drawn from C{data}, cut into chunks at arbitrary
        points, some of them empty.
    """
    whole = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=12)))
    bounds = [0, *cuts, len(whole)]
    return [whole[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
