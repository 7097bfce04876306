import AsyncHTTPClient
import Foundation

/// Seconds on a monotonic clock.
func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Sends one request with streaming on and times its chunks as they arrive.
struct RequestSender: Sendable {
    let client: HTTPClient
    let config: BenchmarkConfig
    /// The OpenAI `model` field (the served model's name).
    let model: String?

    func send(_ request: BenchRequest) async -> RequestResult {
        let body: [UInt8]
        do {
            body = try RequestBody.make(request, config: config, model: model)
        } catch {
            var r = RequestResult(index: request.index, adapter: request.adapter, inputTokens: request.inputLength)
            r.error = "cannot build the request body: \(error)"
            return r
        }
        var http = HTTPClientRequest(url: config.baseURL + config.backend.path)
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: "text/event-stream")
        if let key = config.apiKey, !key.isEmpty { http.headers.add(name: "Authorization", value: "Bearer \(key)") }
        http.body = .bytes(body)

        let start = monotonicSeconds()
        var m = StreamMeasurement(request: request, start: start, countsChunks: !config.backend.isNative)
        do {
            let response = try await client.execute(http, timeout: .seconds(Int64(config.requestTimeout)))
            guard response.status.code == 200 else {
                let bytes = try? await response.body.collect(upTo: 1 << 20)
                let text = bytes?.withUnsafeReadableBytes { String(decoding: $0, as: UTF8.self) } ?? ""
                return m.fail("HTTP \(response.status.code): \(Self.clip(text))", status: Int(response.status.code), at: monotonicSeconds())
            }
            var splitter = SSELineSplitter()
            for try await buffer in response.body {
                let now = monotonicSeconds()
                let payloads = buffer.withUnsafeReadableBytes { splitter.feed($0) }
                for p in payloads where !m.take(StreamChunk(payload: p, backend: config.backend), at: now) {
                    return m.fail(m.result.error ?? "error in stream", status: 200, at: now)
                }
            }
            let end = monotonicSeconds()
            for p in splitter.finish() where !m.take(StreamChunk(payload: p, backend: config.backend), at: end) {
                return m.fail(m.result.error ?? "error in stream", status: 200, at: end)
            }
            return m.finish(at: end)
        } catch {
            return m.fail("\(error)", status: nil, at: monotonicSeconds())
        }
    }

    static func clip(_ text: String, limit: Int = 2000) -> String {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return t.count <= limit ? t : String(t.prefix(limit)) + "…"
    }
}

/// The JSON bodies `sglang.bench_serving` sends: greedy, `ignore_eos`, streaming.
enum RequestBody {
    static func make(_ r: BenchRequest, config: BenchmarkConfig, model: String?) throws -> [UInt8] {
        var o: [String: Any] = ["stream": true]
        switch config.backend {
        case .sglang, .sglangNative:
            switch r.prompt {
            case .ids(let ids): o["input_ids"] = ids
            case .text(let t): o["text"] = t
            }
            o["sampling_params"] = ["temperature": 0.0, "max_new_tokens": r.outputLength, "ignore_eos": config.ignoreEOS]
            if let a = r.adapter { o["lora_path"] = a }
        case .openai, .openaiChat:
            if config.backend == .openai {
                switch r.prompt {
                case .ids(let ids): o["prompt"] = ids
                case .text(let t): o["prompt"] = t
                }
            } else {
                let text: String
                switch r.prompt {
                case .text(let t): text = t
                case .ids(let ids): text = ids.map(String.init).joined(separator: " ")
                }
                o["messages"] = [["role": "user", "content": text]]
            }
            o["temperature"] = 0.0
            o["max_tokens"] = r.outputLength
            o["ignore_eos"] = config.ignoreEOS
            o["stream_options"] = ["include_usage": true]
            let base = model ?? "default"
            o["model"] = base
            if let a = r.adapter {
                switch config.openAIAdapterStyle {
                case .colon: o["model"] = "\(base):\(a)"
                case .model: o["model"] = a
                case .field: o["lora_path"] = a
                }
            }
        }
        if let extra = config.extraRequestBody,
           let object = try JSONSerialization.jsonObject(with: Data(extra.utf8)) as? [String: Any] {
            for (k, v) in object {
                if let inner = v as? [String: Any], var existing = o[k] as? [String: Any] {
                    existing.merge(inner) { _, new in new }
                    o[k] = existing
                } else {
                    o[k] = v
                }
            }
        }
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.withoutEscapingSlashes]))
    }
}
