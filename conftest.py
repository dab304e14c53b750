"""Repository-wide pytest hooks (tests/ and datasets/)."""


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  # tf.test.TestCase carries a `test_session` helper that pytest collects and skips as "Not a test." in every test
  # class; it is not one of ours, and the skips would hide the real ones (which say why they skipped).
  items[:] = [item for item in items if item.name != 'test_session']
