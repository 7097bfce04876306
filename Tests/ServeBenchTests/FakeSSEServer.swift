import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A stand-in for an SGLang server on loopback: `/generate` and the OpenAI completion routes
/// stream exactly `max_new_tokens` / `max_tokens` tokens, one SSE chunk per token every
/// `tokenDelay` seconds after `firstTokenDelay`; one adapter name can be made to fail with 400.
/// Plain POSIX sockets, one thread per connection, `Connection: close`.
final class FakeSSEServer: @unchecked Sendable {
    let port: Int
    let tokenDelay: Double
    let firstTokenDelay: Double
    let rejectedAdapter: String?
    let modelPath: String
    private let listener: Int32
    private let lock = NSLock()
    private var bodies: [[String: Any]] = []
    private var loaded: [(name: String, path: String)] = []
    private var stopped = false

    init(tokenDelay: Double, firstTokenDelay: Double, rejectedAdapter: String? = nil, modelPath: String) throws {
        self.tokenDelay = tokenDelay
        self.firstTokenDelay = firstTokenDelay
        self.rejectedAdapter = rejectedAdapter
        self.modelPath = modelPath
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 128) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard ok else { throw POSIXError(.EADDRINUSE) }
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Starts accepting connections.
    func start() -> FakeSSEServer {
        Thread { [self] in acceptLoop() }.start()
        return self
    }

    /// Adapters registered through `/load_lora_adapter`, in order.
    var loadedAdapters: [(name: String, path: String)] {
        lock.lock()
        defer { lock.unlock() }
        return loaded
    }

    /// The JSON bodies of the generation POSTs received, in arrival order.
    var receivedBodies: [[String: Any]] {
        lock.lock()
        defer { lock.unlock() }
        return bodies
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            let t = Thread { [self] in
                handle(fd)
                close(fd)
            }
            t.start()
        }
    }

    private func handle(_ fd: Int32) {
        guard let (head, body) = readRequest(fd) else { return }
        let requestLine = head.split(separator: "\r\n").first.map(String.init) ?? ""
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2 else { return }
        let method = String(parts[0]), path = String(parts[1])
        if method == "GET" {
            switch path {
            case "/v1/models":
                let ids = ["fake-model"] + loadedAdapters.map(\.name)
                let list = ["object": "list", "data": ids.map { ["id": $0, "object": "model"] }] as [String: Any]
                respond(fd, 200, String(decoding: try! JSONSerialization.data(withJSONObject: list), as: UTF8.self))
            case "/get_model_info": respond(fd, 200, String(data: try! JSONSerialization.data(withJSONObject: ["model_path": modelPath]), encoding: .utf8)!)
            default: respond(fd, 404, #"{"error":{"message":"not found"}}"#)
            }
            return
        }
        guard let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            respond(fd, 400, #"{"error":{"message":"bad json"}}"#)
            return
        }
        if path == "/load_lora_adapter" {
            lock.lock()
            loaded.append((json["lora_name"] as? String ?? "", json["lora_path"] as? String ?? ""))
            lock.unlock()
            respond(fd, 200, #"{"success":true,"error_message":null}"#)
            return
        }
        lock.lock()
        bodies.append(json)
        lock.unlock()
        let sampling = json["sampling_params"] as? [String: Any] ?? [:]
        let count = (sampling["max_new_tokens"] as? Int) ?? (json["max_tokens"] as? Int) ?? 1
        let model = json["model"] as? String ?? ""
        let adapter = (json["lora_path"] as? String) ?? (model.contains(":") ? String(model.split(separator: ":").last!) : nil)
        if let rejected = rejectedAdapter, adapter == rejected {
            respond(fd, 400, #"{"error":{"message":"unknown adapter '\#(rejected)'"}}"#)
            return
        }
        let chat = (json["messages"] as? [[String: Any]])?.first?["content"]
        let promptTokens = (json["input_ids"] as? [Any])?.count ?? ((json["text"] ?? json["prompt"] ?? chat) as? String)?.split(separator: " ").count ?? 1
        write(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        Thread.sleep(forTimeInterval: firstTokenDelay)
        var ids: [Int] = []
        for k in 1...max(count, 1) {
            if k > 1 { Thread.sleep(forTimeInterval: tokenDelay) }
            ids.append(k)
            let event: String
            switch path {
            case "/generate":
                event = #"{"text":"\#(String(repeating: "a ", count: k))","output_ids":\#(ids),"meta_info":{"id":"x","prompt_tokens":\#(promptTokens),"completion_tokens":\#(k),"finish_reason":null}}"#
            case "/v1/chat/completions":
                event = #"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a "},"finish_reason":null}]}"#
            default:
                event = #"{"id":"c","object":"text_completion","choices":[{"index":0,"text":"a ","finish_reason":null}]}"#
            }
            chunk(fd, "data: \(event)\n\n")
        }
        if path != "/generate" {
            chunk(fd, #"data: {"id":"c","choices":[],"usage":{"prompt_tokens":\#(promptTokens),"completion_tokens":\#(count),"total_tokens":\#(promptTokens + count)}}"# + "\n\n")
        }
        chunk(fd, "data: [DONE]\n\n")
        write(fd, "0\r\n\r\n")
    }

    private func readRequest(_ fd: Int32) -> (String, [UInt8])? {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headEnd: Int?
        var contentLength = 0
        while true {
            if let end = headEnd, data.count >= end + contentLength {
                return (String(decoding: data[0..<end], as: UTF8.self), Array(data[end..<(end + contentLength)]))
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            data += buffer[0..<n]
            if headEnd == nil, let r = find(data, Array("\r\n\r\n".utf8)) {
                headEnd = r + 4
                let head = String(decoding: data[0..<r], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    contentLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
    }

    private func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
        return nil
    }

    private func respond(_ fd: Int32, _ status: Int, _ body: String) {
        let reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request"
        write(fd, "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
    }

    private func chunk(_ fd: Int32, _ text: String) {
        write(fd, String(text.utf8.count, radix: 16) + "\r\n" + text + "\r\n")
    }

    private func write(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
