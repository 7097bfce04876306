@_exported import LoomTestSupport
