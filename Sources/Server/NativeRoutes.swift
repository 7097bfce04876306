import LoomCore
import Engine
import Foundation
import Hummingbird
import LoRA

/// SGLang's native API: `/generate`, adapter loading, health, info, cache and metrics routes.
extension ServerState {
    func addNativeRoutes(to router: Router<BasicRequestContext>) {
        router.post("/generate") { request, _ in try await self.generate(request) }
        router.put("/generate") { request, _ in try await self.generate(request) }
        router.post("/load_lora_adapter") { request, _ in try await self.loadAdapter(request) }
        router.post("/unload_lora_adapter") { request, _ in try await self.unloadAdapter(request) }
        router.get("/health") { _, _ in Response(status: self.isShuttingDown ? .serviceUnavailable : .ok) }
        router.get("/health_generate") { _, _ in await self.healthGenerate() }
        router.get("/get_model_info") { _, _ in Response.json(self.modelInfo) }
        router.get("/get_server_info") { _, _ in Response.json(self.serverInfo) }
        router.get("/flush_cache") { _, _ in self.flushCache() }
        router.post("/flush_cache") { _, _ in self.flushCache() }
        router.get("/metrics") { _, _ in
            let text = self.metrics.render(stats: self.service.stats, maxLoras: self.configuration.maxLorasPerBatch)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
    }

    func generate(_ request: Request) async throws -> Response {
        let parsed: GenerateRequest
        let prepared: [PreparedRequest]
        do {
            try checkAcceptingRequests(shape: .native)
            parsed = try GenerateRequest(try await request.jsonBody(limit: configuration.maxBodySize))
            prepared = try prepare(parsed)
        } catch {
            metrics.recordRejected(route: "/generate")
            throw APIError.from(error, shape: .native)
        }
        let options: [GenerateOutputOptions] = parsed.items.flatMap { item in
            Array(repeating: GenerateOutputOptions(
                returnLogprob: item.returnLogprob, topLogprobsNum: item.topLogprobsNum,
                returnTextInLogprobs: parsed.returnTextInLogprobs), count: item.params.n)
        }
        let listAnswer = parsed.isBatch || prepared.count > 1
        if parsed.stream {
            let renderer = NativeStreamRenderer(state: self, options: options, indexed: listAnswer)
            return try await SSE.response(merger: streamAll(prepared), renderer: renderer, errorShape: .native)
        }
        let results: [GenerationState]
        do {
            results = try await generateAll(prepared)
        } catch {
            throw APIError.from(error, shape: .native)
        }
        let outputs = zip(results, options).map { generateOutput($0, options: $1, index: nil) }
        return Response.json(listAnswer ? .array(outputs) : outputs[0])
    }

    func loadAdapter(_ request: Request) async throws -> Response {
        let f = try RequestFields(try await request.jsonBody(limit: configuration.maxBodySize), shape: .native)
        guard let name = try f.string("lora_name") else { throw APIError.validation("lora_name is required.") }
        guard let path = try f.string("lora_path") else { throw APIError.validation("lora_path is required.") }
        let pinned = try f.bool("pinned") ?? false
        guard service.adapters != nil else { return adapterResult(error: Self.loraNotEnabled) }
        if let problem = Self.adapterNameProblem(name) { return adapterResult(error: problem) }
        logger.info("loading adapter", metadata: ["adapter": .string(name), "path": .string(path), "pinned": .stringConvertible(pinned)])
        do {
            let readPath = try allowedAdapterPath(path)
            try await service.loadAdapter(LoRAPathSpec(name: name, path: readPath, pinned: pinned))
        } catch {
            logger.warning("adapter load failed", metadata: ["adapter": .string(name), "error": .string("\(error)")])
            return adapterResult(error: "\(error)")
        }
        return adapterResult(error: nil)
    }

    func unloadAdapter(_ request: Request) async throws -> Response {
        let f = try RequestFields(try await request.jsonBody(limit: configuration.maxBodySize), shape: .native)
        guard let name = try f.string("lora_name") else { throw APIError.validation("lora_name is required.") }
        guard service.adapters != nil else { return adapterResult(error: Self.loraNotEnabled) }
        logger.info("unloading adapter", metadata: ["adapter": .string(name)])
        do {
            try await service.unloadAdapter(name: name)
        } catch {
            return adapterResult(error: "\(error)")
        }
        return adapterResult(error: nil)
    }

    /// SGLang's `LoadLoRAAdapterReqOutput` / `UnloadLoRAAdapterReqOutput`, 200 or 400.
    private func adapterResult(error: String?) -> Response {
        Response.json(
            ["success": .bool(error == nil), "error_message": JSON(error), "loaded_adapters": loadedAdapters],
            status: error == nil ? .ok : .badRequest)
    }

    /// Runs a one-token generation; 200 when a token (or a finish) arrives in time, else 503.
    func healthGenerate() async -> Response {
        guard !isShuttingDown else { return Response(status: .serviceUnavailable) }
        var params = SamplingParams()
        params.maxNewTokens = 1
        params.temperature = 0
        let id = "HEALTH_CHECK_\(Self.newRequestID())"
        let events = service.submit(EngineRequest(id: id, promptIds: [0], adapter: nil, params: params))
        let timeout = configuration.healthCheckTimeout
        let healthy = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                do {
                    for try await _ in events { return true }
                } catch {}
                return false
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        service.abort(id: id)
        return Response(status: healthy ? .ok : .serviceUnavailable)
    }

    var modelInfo: JSON {
        [
            "model_path": .string(service.modelPath),
            "tokenizer_path": .string(tokenizerPath),
            "is_generation": true,
            "preferred_sampling_params": nil,
            "weight_version": "default",
            "served_model_name": .string(servedModelName),
            "max_context_length": .int(service.maxContextLength),
        ]
    }

    /// The server arguments, then the scheduler's limits and the engine's live state.
    var serverInfo: JSON {
        var o = configuration.serverArgs
        let stats = service.stats
        o["max_total_num_tokens"] = .int(stats.totalBlocks * stats.blockSize)
        o["max_req_input_len"] = .int(service.maxContextLength - 1)
        var internalState: JSONObject = [
            "running": .int(stats.running),
            "waiting": .int(stats.waiting),
            "total_kv_blocks": .int(stats.totalBlocks),
            "free_kv_blocks": .int(stats.freeBlocks),
            "cached_kv_blocks": .int(stats.cachedBlocks),
            "block_size": .int(stats.blockSize),
            "slot_occupants": .array(stats.slotOccupants.map { $0.map { .int(Int(truncatingIfNeeded: $0)) } ?? .null }),
            "running_by_adapter": Self.counts(stats.runningByAdapter),
            "waiting_by_adapter": Self.counts(stats.waitingByAdapter),
            "in_flight_by_adapter": Self.counts(stats.inFlightByAdapter),
            "generated_tokens": .int(stats.generatedTokens),
            "steps": .int(stats.steps),
        ]
        internalState["loaded_adapters"] = loadedAdapters
        o["internal_states"] = [.object(internalState)]
        o["version"] = .string(LoomServer.version)
        return .object(o)
    }

    private static func counts(_ d: [String: Int]) -> JSON {
        var o = JSONObject()
        for k in d.keys.sorted() { o[k] = .int(d[k]!) }
        return .object(o)
    }

    /// SGLang's plain-text answer; 400 while requests are running.
    func flushCache() -> Response {
        let ok = service.flushCache()
        return Response.text(
            "Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting requests, the operation will not be performed.)\n",
            status: ok ? .ok : .badRequest)
    }
}

/// Native `/generate` stream chunks: each carries the cumulative `text` and `output_ids` and the
/// `meta_info` so far, as SGLang streams them; batch items carry their `index`.
final class NativeStreamRenderer: StreamRenderer, @unchecked Sendable {
    let state: ServerState
    let options: [GenerateOutputOptions]
    let indexed: Bool

    init(state: ServerState, options: [GenerateOutputOptions], indexed: Bool) {
        self.state = state
        self.options = options
        self.indexed = indexed
    }

    func chunks(index: Int, state snapshot: GenerationState) -> [JSON] {
        [state.generateOutput(snapshot, options: options[index], index: indexed ? index : nil)]
    }
}
