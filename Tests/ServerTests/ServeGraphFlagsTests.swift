import Foundation
import Testing

@testable import Server

/// SGLang's CUDA-graph flags on `loom serve`: checked at startup and reported by
/// `/get_server_info` (on the CPU they change nothing: no graphs, no padding).
@Suite(.enabled(if: LoomServeProcess.binary != nil, "the loom binary is not built next to the tests"))
struct ServeGraphFlagsTests {
    @Test func badGraphBatchSizesAreRefused() throws {
        for (flags, message) in [(["--cuda-graph-max-bs", "0"], "--cuda-graph-max-bs must be positive"),
                                 (["--cuda-graph-bs", "4", "0"], "--cuda-graph-bs must be positive")] {
            let run = try runProcess(LoomServeProcess.binary!, ["serve", "--device", "cpu"] + flags)
            #expect(run.status != 0 && run.stderr.contains(message), "\(flags): \(run.stderr)")
        }
    }

    @Test func gemmTuningNeedsOneGPUWithGraphs() throws {
        let message = "--tune-gemms times decode steps in CUDA graphs on one GPU"
        for flags in [["--device", "cpu"], ["--device", "cuda", "--disable-cuda-graph"], ["--device", "cuda", "--tp-size", "2"]] {
            let run = try runProcess(LoomServeProcess.binary!, ["serve", "--tune-gemms"] + flags)
            #expect(run.status != 0 && run.stderr.contains(message), "\(flags): \(run.stderr)")
        }
    }

    @Test func graphFlagsAreReported() async throws {
        let server = try LoomServeProcess(LoomServeProcess.demoAdapters + ["--disable-cuda-graph", "--cuda-graph-max-bs", "8", "--cuda-graph-bs", "1", "4"])
        let info = try await server.get("/get_server_info").json()
        #expect(info["disable_cuda_graph"] == true)
        #expect(info["cuda_graph_max_bs"] == 8)
        #expect(info["cuda_graph_bs"] == [1, 4])
        #expect(info["tune_gemms"] == false)
        let reply = try await server.post("/generate", ["text": "Once upon a time", "sampling_params": ["temperature": 0, "max_new_tokens": 4]])
        #expect(reply.status == 200)
        _ = try await server.terminate()
    }
}
