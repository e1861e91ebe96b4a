"""Example plug-ins for ``dualchain up`` (docs/plugins.md); not part of the installed package."""
