"""``xattr_lab.widgets``: the notebook front end (import package ``xattr_widgets``, folder ``widgets/``)
under its public name. ``from xattr_lab import widgets`` and ``xattr_lab.widgets.<module>`` give the
``xattr_widgets`` modules themselves (``xattr_widgets.alias``); this module replaces itself with them."""
from xattr_widgets.alias import install

install(__name__, "xattr_widgets")
