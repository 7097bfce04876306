import Hummingbird
import LoomCore

extension JSON {
    /// The compact serialization, as a response body.
    public var byteBuffer: ByteBuffer { ByteBuffer(bytes: serialized()) }
}
