"""Repository-level pytest settings for pytest-icl's own tests.

pytester drives the plugin in throwaway projects (tests/integration); the repository root is on
sys.path (rootdir conftest) so tests can import ``tests.tiny_models``.
"""

pytest_plugins = ["pytester"]
