import LoomCore
import Foundation
import Hummingbird

/// Turns merged generation snapshots into SSE `data:` payloads; one instance per response, used
/// only by that response's writer.
protocol StreamRenderer: AnyObject {
    /// The payloads for a new snapshot of request `index` (possibly none).
    func chunks(index: Int, state: GenerationState) -> [JSON]
    /// Payloads after every request finished, before `[DONE]` (OpenAI's usage chunk).
    func finalChunks() -> [JSON]
}

extension StreamRenderer {
    func finalChunks() -> [JSON] { [] }
}

/// Server-sent events as SGLang writes them: `data: <json>\n\n` frames ending `data: [DONE]\n\n`.
enum SSE {
    static func frame(_ payload: JSON) -> ByteBuffer {
        var bytes = Array("data: ".utf8)
        payload.write(into: &bytes)
        bytes += [0x0A, 0x0A]
        return ByteBuffer(bytes: bytes)
    }

    static let done = ByteBuffer(string: "data: [DONE]\n\n")

    /// A streaming response that writes the merger's snapshots through `renderer`.
    ///
    /// The first snapshot is awaited before the response starts, so a request the engine refuses
    /// at once (a full queue, shutting down, an adapter unloaded meanwhile) gets its proper status
    /// instead of a 200 with an error frame. A client that disconnects later makes a write fail
    /// (within a frame or two of the next token), which aborts every unfinished engine request of
    /// the response. An engine error after the stream began is sent as one error frame, then
    /// `[DONE]`.
    ///
    /// (Hummingbird's `consumeWithInboundCloseHandler` would notice the hang-up even between
    /// tokens, but it needs an unread request body, and the body is read first to validate it.)
    static func response(merger: EventMerger, renderer: some StreamRenderer & Sendable, errorShape: APIError.Shape) async throws -> Response {
        let updates = UpdateIterator(merger.updates.makeAsyncIterator())
        let first: (index: Int, state: GenerationState)?
        do {
            first = try await updates.next()
        } catch {
            merger.cancel()
            throw APIError.from(error, shape: errorShape)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                do {
                    try await pump(first: first, updates: updates, renderer: renderer, errorShape: errorShape, writer: &writer)
                    try await writer.finish(nil)
                } catch {
                    merger.cancel()
                    throw error
                }
            })
    }

    private static func pump(
        first: (index: Int, state: GenerationState)?, updates: UpdateIterator, renderer: some StreamRenderer,
        errorShape: APIError.Shape, writer: inout any ResponseBodyWriter
    ) async throws {
        var next = first
        var engineError: (any Error)?
        while let update = next {
            for payload in renderer.chunks(index: update.index, state: update.state) {
                try await writer.write(frame(payload))
            }
            do {
                next = try await updates.next()
            } catch {
                engineError = error
                break
            }
        }
        if let engineError {
            try await writer.write(frame(APIError.from(engineError, shape: errorShape).streamBody))
        } else {
            for payload in renderer.finalChunks() { try await writer.write(frame(payload)) }
        }
        try await writer.write(done)
    }
}

/// Holds the merged stream's iterator between the handler (first snapshot) and the body writer.
final class UpdateIterator: @unchecked Sendable {
    private var iterator: AsyncThrowingStream<(index: Int, state: GenerationState), Error>.AsyncIterator

    init(_ iterator: AsyncThrowingStream<(index: Int, state: GenerationState), Error>.AsyncIterator) {
        self.iterator = iterator
    }

    func next() async throws -> (index: Int, state: GenerationState)? { try await iterator.next() }
}
