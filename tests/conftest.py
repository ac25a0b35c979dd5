"""pytest setup: absl flags parsed (absltest helpers need them), and the
slow tests collected first, so that with pytest-xdist (`-n 2`) the long
runs start at once and the short tests fill the other worker around them."""

from absl import flags


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
