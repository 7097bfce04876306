import Foundation
import Testing

@testable import Server

/// Serves the fake engine on a fixed port for a while, so the Python clients in `scripts/` can be
/// run against the HTTP layer without a model:
///
///     LOOM_FAKE_SERVE_PORT=30000 LOOM_FAKE_SERVE_SECONDS=120 swift test --filter serveTheFakeEngine &
///     python3 scripts/sglang_docs_client.py http://127.0.0.1:30000
///     python3 scripts/openai_client.py http://127.0.0.1:30000
///
/// Skipped unless `LOOM_FAKE_SERVE_PORT` is set.
@Test(.enabled(if: ProcessInfo.processInfo.environment["LOOM_FAKE_SERVE_PORT"] != nil))
func serveTheFakeEngine() async throws {
    let env = ProcessInfo.processInfo.environment
    let port = try #require(env["LOOM_FAKE_SERVE_PORT"].flatMap(Int.init))
    let seconds = env["LOOM_FAKE_SERVE_SECONDS"].flatMap(Double.init) ?? 60
    let server = try await TestServer.start(try makeService()) { config in
        config.port = port
        config.apiKey = env["LOOM_FAKE_SERVE_API_KEY"]
    }
    try await Task.sleep(for: .seconds(seconds))
    try await server.stop()
}
