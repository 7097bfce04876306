import Engine
import Foundation
import Testing

@testable import Server

/// Auth, info routes, metrics, client disconnects and graceful shutdown.
@Suite struct ServerBehaviourTests {
    @Test func apiKeyGuardsRoutesButHealthAndMetrics() async throws {
        try await withServer(try makeService(), configure: { $0.apiKey = "sk-loom" }) { server in
            let denied = try await server.post("/generate", ["text": "hi"])
            #expect(denied.status == 401)
            #expect(try denied.json() == ["error": "Unauthorized"])
            #expect(try await server.get("/v1/models", headers: ["Authorization": "Bearer wrong"]).status == 401)
            #expect(try await server.get("/get_model_info").status == 401)
            let ok = try await server.post("/generate", ["text": "hi", "sampling_params": ["max_new_tokens": 1]], headers: ["Authorization": "Bearer sk-loom"])
            #expect(ok.status == 200)
            #expect(try await server.get("/v1/models", headers: ["Authorization": "Bearer sk-loom"]).status == 200)
            #expect(try await server.get("/health").status == 200)
            #expect(try await server.get("/metrics").status == 200)
            // CORS preflight needs no key, as in SGLang.
            let preflight = try await server.request(
                "OPTIONS", "/v1/completions", headers: ["Origin": "http://ui.example", "Access-Control-Request-Method": "POST"])
            #expect(preflight.status == 200 || preflight.status == 204)
            #expect(preflight.headers["access-control-allow-origin"] == "http://ui.example")
        }
    }

    @Test func healthModelAndServerInfo() async throws {
        let service = try makeService()
        try await withServer(service, configure: { $0.servedModelName = "my-model" }) { server in
            #expect(try await server.get("/health").status == 200)
            #expect(try await server.get("/health_generate").status == 200)
            #expect(service.submitted.last?.params.maxNewTokens == 1)

            let info = try await server.get("/get_model_info").json()
            #expect(info["model_path"]?.stringValue == service.modelPath)
            #expect(info["tokenizer_path"]?.stringValue == service.modelPath)
            #expect(info["is_generation"] == true)

            let s = try await server.get("/get_server_info").json()
            #expect(s["model_path"]?.stringValue == service.modelPath)
            let state = try #require(s["internal_states"]?[0])
            #expect(state["total_kv_blocks"] == 64)
            #expect(state["free_kv_blocks"] == 64)
            #expect(state["slot_occupants"] == [nil, 1, nil, nil])
            #expect(state["loaded_adapters"] == ["sql": "/adapters/sql", "python": "/adapters/python"])
            #expect(s["version"]?.stringValue == LoomServer.version)
        }
    }

    @Test func flushCacheIsPlainText() async throws {
        try await withServer(try makeService()) { server in
            let r = try await server.request("POST", "/flush_cache")
            #expect(r.status == 200)
            #expect(r.text.hasPrefix("Cache flushed."))
            #expect(try await server.get("/flush_cache").status == 200)
        }
    }

    @Test func metricsCountPerAdapterAndExportLoraInfo() async throws {
        let service = try makeService()
        service.tokenDelay = .milliseconds(30)
        try await withServer(service) { server in
            _ = try await server.post("/generate", ["text": ["a", "b"], "lora_path": ["sql", nil], "sampling_params": ["max_new_tokens": 2]])
            async let slow = server.post("/generate", ["text": "c", "lora_path": "python", "sampling_params": ["max_new_tokens": 30]])
            #expect(await eventually { service.runningCount == 1 })
            let text = try await server.get("/metrics")
            #expect(text.headers["content-type"]?.hasPrefix("text/plain") == true)
            let body = text.text
            #expect(body.contains(#"sglang:num_requests_total{model_name="stories260k",adapter="sql",finish_reason="length"} 1"#))
            #expect(body.contains(#"sglang:num_requests_total{model_name="stories260k",adapter="",finish_reason="length"} 1"#))
            #expect(body.contains(#"sglang:generation_tokens_total{model_name="stories260k",adapter="sql"} 2"#))
            #expect(body.contains(#"sglang:e2e_request_latency_seconds_bucket{model_name="stories260k",adapter="sql""#))
            #expect(body.contains(#"sglang:time_to_first_token_seconds_count{model_name="stories260k",adapter="""#))
            #expect(body.contains(#"vllm:lora_requests_info{running_lora_adapters="python",max_lora="8",waiting_lora_adapters=""}"#))
            _ = try await slow
        }
    }

    @Test func stepTotalsAreCountersThatAddTheEnginesGains() async throws {
        let service = try makeService()
        try await withServer(service) { server in
            var totals = StepTotals()
            totals.steps = 10; totals.tokens = 300; totals.prefillTokens = 260; totals.sequences = 50; totals.adapters = 35
            totals.graphSteps = 4; totals.seconds.launch = 0.5; totals.seconds.wait = 0.25
            service.stepTotals = totals
            var body = try await server.get("/metrics").text
            #expect(body.contains(#"loom:steps_total{model_name="stories260k"} 10"#))
            #expect(body.contains(#"loom:step_adapters_total{model_name="stories260k"} 35"#))
            #expect(body.contains(#"loom:graph_steps_total{model_name="stories260k"} 4"#))
            #expect(body.contains(#"loom:step_seconds_total{model_name="stories260k",phase="launch"} 0.5"#))
            totals.steps = 14; totals.adapters = 47; totals.tokens = 340; totals.seconds.launch = 0.75
            service.stepTotals = totals
            body = try await server.get("/metrics").text
            #expect(body.contains(#"loom:steps_total{model_name="stories260k"} 14"#))
            #expect(body.contains(#"loom:step_adapters_total{model_name="stories260k"} 47"#))
            #expect(body.contains(#"loom:step_tokens_total{model_name="stories260k"} 340"#))
            #expect(body.contains(#"loom:step_prefill_tokens_total{model_name="stories260k"} 260"#))
            #expect(body.contains(#"loom:step_sequences_total{model_name="stories260k"} 50"#))
            #expect(body.contains(#"loom:step_seconds_total{model_name="stories260k",phase="launch"} 0.75"#))
            #expect(body.contains(#"loom:step_seconds_total{model_name="stories260k",phase="wait"} 0.25"#))
            #expect(body.contains(#"loom:step_seconds_total{model_name="stories260k",phase="schedule"} 0"# + "\n"))
        }
    }

    @Test func clientDisconnectDuringStreamingAbortsTheRequest() async throws {
        let service = try makeService()
        service.tokenDelay = .milliseconds(20)
        try await withServer(service) { server in
            let port = server.port
            let firstChunk = try await TestHTTP.onThread { () -> String in
                let c = try TestConnection(port: port)
                let request: JSON = ["input_ids": [1, 2, 3], "rid": "gone", "stream": true, "sampling_params": ["max_new_tokens": 500]]
                let body = request.serialized()
                try c.send(method: "POST", path: "/generate", headers: ["Content-Type": "application/json"], body: body)
                let head = try c.readHead()
                #expect(head.status == 200)
                let chunk = try c.readChunk() ?? []
                c.hangUp()
                return String(decoding: chunk, as: UTF8.self)
            }
            #expect(firstChunk.hasPrefix("data: {"))
            #expect(await eventually { service.aborted.contains("gone") })
            #expect(await eventually { service.runningCount == 0 })
            #expect(service.submitted.count == 1)
            // The server is still fine.
            #expect(try await server.post("/generate", ["text": "x", "sampling_params": ["max_new_tokens": 1]]).status == 200)
        }
    }

    @Test func gracefulShutdownFinishesInFlightAndRefusesNewWork() async throws {
        let service = try makeService()
        service.tokenDelay = .milliseconds(20)
        let server = try await TestServer.start(service)
        async let inFlight = server.post("/generate", ["input_ids": [1, 5], "sampling_params": ["max_new_tokens": 25]])
        #expect(await eventually { service.runningCount == 1 })
        let stopping = Task { try await server.stop() }
        #expect(await eventually { service.shutdownGrace != nil })
        let refused = try await server.post("/generate", ["text": "late", "sampling_params": ["max_new_tokens": 1]])
        #expect(refused.status == 503)
        #expect(try await server.get("/health").status == 503)
        let done = try await inFlight
        #expect(done.status == 200)
        #expect(try done.json()["meta_info", "finish_reason"] == ["type": "length", "length": 25])
        try await stopping.value
        #expect(service.shutdownGrace == 5)
    }

    @Test func shutdownAbortsWhatOutlivesTheGracePeriod() async throws {
        let service = try makeService()
        service.tokenDelay = .milliseconds(20)
        let server = try await TestServer.start(service) { $0.shutdownGracePeriod = 0.2 }
        async let inFlight = server.post("/generate", ["input_ids": [1, 5], "sampling_params": ["max_new_tokens": 400]])
        #expect(await eventually { service.runningCount == 1 })
        try await server.stop()
        let r = try await inFlight
        #expect(try r.json()["meta_info", "finish_reason", "type"] == "abort")
    }
}
