import Foundation
import Testing

@testable import Server

/// The repository's Python clients against the built `loom serve`: SGLang's documentation
/// snippets (`requests`), the official `openai` client, and a 2-minute soak with adapter churn
/// and client disconnects. They need `requests` and `openai` (`.ci/run` installs them).
@Suite(.enabled(if: LoomServeProcess.binary != nil && PythonScripts.hasClients, "needs the loom binary and python3 with requests and openai"))
struct PythonClientTests {
    @Test func sglangDocumentationSnippets() async throws {
        let server = try LoomServeProcess([
            "--model-path", "Fixtures/models/llama-tiny", "--enable-lora", "--max-loras-per-batch", "3",
            "--max-lora-rank", "64", "--lora-target-modules", "all",
        ])
        let run = try await PythonScripts.runAsync(["scripts/sglang_docs_client.py", server.baseURL])
        #expect(run.status == 0, "\(run.stdout.suffix(2000))\n\(run.stderr.suffix(2000))")
        #expect(try await server.terminate() == 0)
    }

    @Test func officialOpenAIClient() async throws {
        let server = try LoomServeProcess(LoomServeProcess.demoAdapters + ["--api-key", "sk-openai-test"])
        let run = try await PythonScripts.runAsync(["scripts/openai_client.py", server.baseURL, "--api-key", "sk-openai-test", "--adapter", "pirate"])
        #expect(run.status == 0, "\(run.stdout.suffix(2000))\n\(run.stderr.suffix(2000))")
        #expect(try await server.terminate() == 0)
    }

    /// `scripts/soak.py` for 2 minutes on the CPU: concurrent greedy clients on random adapters,
    /// streaming and disconnecting, an adapter loaded and unloaded every second, both API keys
    /// in use. It checks that nothing failed unexpectedly, that every output equals the same
    /// request run alone, and that the server went back to idle.
    @Test func twoMinuteSoak() async throws {
        let server = try LoomServeProcess(LoomServeProcess.demoAdapters + ["--api-key", "sk-soak", "--admin-api-key", "sk-soak-admin"])
        let run = try await PythonScripts.runAsync([
            "scripts/soak.py", "--base-url", server.baseURL, "--duration", "120", "--clients", "6",
            "--adapters", "pirate", "dragon", "--churn-path", "Fixtures/models/stories260k/adapters/r8-all",
            "--api-key", "sk-soak", "--admin-api-key", "sk-soak-admin",
        ])
        #expect(run.status == 0, "\(run.stdout.suffix(3000))\n\(run.stderr.suffix(3000))")
        let summary = try JSON.parse(Array(run.stdout.utf8))
        #expect(summary["failures"] == 0 && summary["mismatches"] == 0 && summary["leaks"] == "none", "\(summary)")
        #expect((summary["finished"]?.intValue ?? 0) > 0 && (summary["churn_loads"]?.intValue ?? 0) > 0, "\(summary)")
        #expect(try await server.terminate() == 0)
    }
}
