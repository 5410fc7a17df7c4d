//! The Thrift1 connection of the HBase store, and a `scannerGetList` reply decoder that does
//! not allocate per row.
//!
//! Role: [`Client`] is one connection's protocol pair (binary protocol, buffered transport)
//! with its sequence number. Being a `TThriftClient` marked `THbaseSyncClientMarker`, it has
//! every generated Thrift1 call of `hbase-thrift` (`THbaseSyncClient`). For the one hot call,
//! [`Client::scanner_get_list_each`] writes the same request as the generated
//! `scanner_get_list` but decodes the reply itself: each row's key and the wanted column's
//! value are read into buffers reused from row to row and handed to a callback, so rows the
//! drill-down filter drops (most of a bucket, when the window is shorter than the bucket) cost
//! no allocation — the generated decoder allocates a `TRowResult`, a map, a column name and a
//! cell per row. Server data is not trusted: byte fields longer than [`MAX_FIELD_BYTES`] are a
//! protocol error (the generated decoder would try to allocate them), unknown fields are
//! skipped, `IOError` / `IllegalArgument` results and application exceptions become the same
//! `thrift::Error`s the generated call returns. Touches only its connection.

use hbase_thrift::hbase::{IOError, IllegalArgument, ScannerID, THbaseSyncClientMarker};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType,
    TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::{
    ReadHalf, TBufferedReadTransport, TBufferedWriteTransport, TReadTransport, TTcpChannel, WriteHalf,
};
use thrift::{ProtocolError, ProtocolErrorKind, TThriftClient};

/// The input side of a connection.
pub(crate) type Input = TBinaryInputProtocol<TBufferedReadTransport<ReadHalf<TTcpChannel>>>;
/// The output side of a connection.
pub(crate) type Output = TBinaryOutputProtocol<TBufferedWriteTransport<WriteHalf<TTcpChannel>>>;

/// Receives each decoded row: its key and the wanted column's value, when present.
pub(crate) type EachRow<'a> = dyn FnMut(Option<&[u8]>, Option<&[u8]>) + 'a;

/// A decoded row as owned bytes (tests).
#[cfg(test)]
type OwnedRow = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The longest byte field (row key, column name, value) a reply may carry.
pub const MAX_FIELD_BYTES: usize = 64 << 20;

/// One Thrift1 connection (see the module documentation).
pub(crate) struct Client {
    input: Input,
    output: Output,
    sequence: i32,
    bufs: RowBufs,
}

impl Client {
    /// A client over a connected protocol pair.
    pub(crate) fn new(input: Input, output: Output) -> Client {
        Client { input, output, sequence: 0, bufs: RowBufs::default() }
    }

    /// `scannerGetList(id, nb_rows)`, handing each row to `each(key, value)` as it is decoded
    /// (`None` when the row has no key, or no cell in `column`); returns the number of rows.
    pub(crate) fn scanner_get_list_each(
        &mut self,
        id: ScannerID,
        nb_rows: i32,
        column: &[u8],
        each: &mut EachRow<'_>,
    ) -> thrift::Result<usize> {
        self.sequence += 1;
        let o = &mut self.output;
        o.write_message_begin(&TMessageIdentifier::new("scannerGetList", TMessageType::Call, self.sequence))?;
        o.write_struct_begin(&TStructIdentifier::new("scannerGetList_args"))?;
        o.write_field_begin(&TFieldIdentifier::new("id", TType::I32, 1))?;
        o.write_i32(id)?;
        o.write_field_end()?;
        o.write_field_begin(&TFieldIdentifier::new("nbRows", TType::I32, 2))?;
        o.write_i32(nb_rows)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()?;
        o.flush()?;

        let i = &mut self.input;
        let ident = i.read_message_begin()?;
        if ident.name != "scannerGetList" || ident.sequence_number != self.sequence {
            return Err(protocol_error(format!(
                "expected the reply to scannerGetList #{}, got {} #{}",
                self.sequence, ident.name, ident.sequence_number
            )));
        }
        if ident.message_type == TMessageType::Exception {
            let remote = thrift::Error::read_application_error_from_in_protocol(i)?;
            i.read_message_end()?;
            return Err(thrift::Error::Application(remote));
        }
        if ident.message_type != TMessageType::Reply {
            return Err(protocol_error(format!("unexpected message type {:?}", ident.message_type)));
        }
        let rows = read_get_list_result(i, column, &mut self.bufs, each)?;
        i.read_message_end()?;
        rows
    }
}

impl TThriftClient for Client {
    fn i_prot_mut(&mut self) -> &mut dyn TInputProtocol {
        &mut self.input
    }
    fn o_prot_mut(&mut self) -> &mut dyn TOutputProtocol {
        &mut self.output
    }
    fn sequence_number(&self) -> i32 {
        self.sequence
    }
    fn increment_sequence_number(&mut self) -> i32 {
        self.sequence += 1;
        self.sequence
    }
}

impl THbaseSyncClientMarker for Client {}

fn protocol_error(message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError { kind: ProtocolErrorKind::InvalidData, message })
}

/// Buffers reused from row to row.
#[derive(Debug, Default)]
struct RowBufs {
    key: Vec<u8>,
    name: Vec<u8>,
    value: Vec<u8>,
    has_key: bool,
    has_value: bool,
}

/// Reads a length-prefixed byte field into `buf` (replacing its contents).
fn read_binary_into<T: TReadTransport>(p: &mut TBinaryInputProtocol<T>, buf: &mut Vec<u8>) -> thrift::Result<()> {
    let mut len = [0u8; 4];
    p.transport.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_FIELD_BYTES)
        .ok_or_else(|| protocol_error(format!("a byte field of {n} bytes")))?;
    buf.clear();
    buf.resize(n, 0);
    p.transport.read_exact(buf)?;
    Ok(())
}

/// The `HbaseScannerGetListResult` struct: field 0 the rows, 1 an `IOError`, 2 an
/// `IllegalArgument`.
fn read_get_list_result<T: TReadTransport>(
    p: &mut TBinaryInputProtocol<T>,
    column: &[u8],
    bufs: &mut RowBufs,
    each: &mut EachRow<'_>,
) -> thrift::Result<thrift::Result<usize>> {
    let mut rows = None;
    let mut failure = None;
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        match (f.id, f.field_type) {
            (Some(0), TType::List) => {
                let list = p.read_list_begin()?;
                let mut n = 0;
                for _ in 0..list.size {
                    read_row(p, column, bufs)?;
                    let key = bufs.has_key.then_some(bufs.key.as_slice());
                    each(key, bufs.has_value.then_some(bufs.value.as_slice()));
                    n += 1;
                }
                p.read_list_end()?;
                rows = Some(n);
            }
            (Some(1), TType::Struct) => {
                failure = Some(thrift::Error::User(Box::new(IOError::read_from_in_protocol(p)?)));
            }
            (Some(2), TType::Struct) => {
                failure = Some(thrift::Error::User(Box::new(IllegalArgument::read_from_in_protocol(p)?)));
            }
            (_, other) => p.skip(other)?,
        }
        p.read_field_end()?;
    }
    p.read_struct_end()?;
    Ok(match (failure, rows) {
        (Some(e), _) => Err(e),
        (None, Some(n)) => Ok(n),
        (None, None) => Err(thrift::Error::Application(thrift::ApplicationError::new(
            thrift::ApplicationErrorKind::MissingResult,
            "no result received for scannerGetList",
        ))),
    })
}

/// One `TRowResult` { 1: row, 2: columns map<name, TCell>, 3: sortedColumns list<TColumn> }:
/// the key and the `column` cell's value into `bufs`.
fn read_row<T: TReadTransport>(
    p: &mut TBinaryInputProtocol<T>,
    column: &[u8],
    bufs: &mut RowBufs,
) -> thrift::Result<()> {
    bufs.has_key = false;
    bufs.has_value = false;
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        match (f.id, f.field_type) {
            (Some(1), TType::String) => {
                read_binary_into(p, &mut bufs.key)?;
                bufs.has_key = true;
            }
            (Some(2), TType::Map) => {
                let map = p.read_map_begin()?;
                for _ in 0..map.size {
                    read_binary_into(p, &mut bufs.name)?;
                    let wanted = bufs.name == column;
                    read_cell(p, wanted, bufs)?;
                }
                p.read_map_end()?;
            }
            (Some(3), TType::List) => {
                let list = p.read_list_begin()?;
                for _ in 0..list.size {
                    // TColumn { 1: columnName, 2: cell }
                    p.read_struct_begin()?;
                    let mut wanted = false;
                    loop {
                        let g = p.read_field_begin()?;
                        if g.field_type == TType::Stop {
                            break;
                        }
                        match (g.id, g.field_type) {
                            (Some(1), TType::String) => {
                                read_binary_into(p, &mut bufs.name)?;
                                wanted = bufs.name == column;
                            }
                            (Some(2), TType::Struct) => read_cell(p, wanted, bufs)?,
                            (_, other) => p.skip(other)?,
                        }
                        p.read_field_end()?;
                    }
                    p.read_struct_end()?;
                }
                p.read_list_end()?;
            }
            (_, other) => p.skip(other)?,
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

/// One `TCell` { 1: value, 2: timestamp }: the value into `bufs` when `wanted`.
fn read_cell<T: TReadTransport>(
    p: &mut TBinaryInputProtocol<T>,
    wanted: bool,
    bufs: &mut RowBufs,
) -> thrift::Result<()> {
    p.read_struct_begin()?;
    loop {
        let f = p.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        match (f.id, f.field_type) {
            (Some(1), TType::String) if wanted => {
                read_binary_into(p, &mut bufs.value)?;
                bufs.has_value = true;
            }
            (_, other) => p.skip(other)?,
        }
        p.read_field_end()?;
    }
    p.read_struct_end()
}

/// Decodes a `scannerGetList` result struct from `bytes` (tests of the decoder).
#[cfg(test)]
fn decode_result(bytes: &[u8], column: &[u8]) -> thrift::Result<(Vec<OwnedRow>, usize)> {
    let mut p = TBinaryInputProtocol::new(bytes, true);
    let mut seen = Vec::new();
    let mut bufs = RowBufs::default();
    let n = read_get_list_result(&mut p, column, &mut bufs, &mut |k, v| {
        seen.push((k.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
    })??;
    Ok((seen, n))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hbase_thrift::hbase::{TCell, TColumn, TRowResult};

    use super::*;

    /// The bytes of a `HbaseScannerGetListResult` as the generated server code writes them.
    fn encode(rows: Option<&[TRowResult]>, io: Option<IOError>) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut p = TBinaryOutputProtocol::new(&mut out, true);
            let go = || -> thrift::Result<()> {
                p.write_struct_begin(&TStructIdentifier::new("result"))?;
                if let Some(rows) = rows {
                    p.write_field_begin(&TFieldIdentifier::new("success", TType::List, 0))?;
                    p.write_list_begin(&thrift::protocol::TListIdentifier::new(TType::Struct, rows.len() as i32))?;
                    for r in rows {
                        r.write_to_out_protocol(&mut p)?;
                    }
                    p.write_list_end()?;
                    p.write_field_end()?;
                }
                if let Some(io) = io {
                    p.write_field_begin(&TFieldIdentifier::new("io", TType::Struct, 1))?;
                    io.write_to_out_protocol(&mut p)?;
                    p.write_field_end()?;
                }
                p.write_field_stop()?;
                p.write_struct_end()
            };
            assert!(go().is_ok());
        }
        out
    }

    fn cell(v: &[u8]) -> TCell {
        TCell::new(v.to_vec(), 7)
    }

    #[test]
    fn decodes_rows_from_the_column_map_and_the_sorted_columns() {
        let by_map = TRowResult::new(
            b"k1".to_vec(),
            BTreeMap::from([(b"r:a".to_vec(), cell(b"other")), (b"r:v".to_vec(), cell(b"value-1"))]),
            None,
        );
        let sorted = TRowResult {
            row: Some(b"k2".to_vec()),
            columns: None,
            sorted_columns: Some(vec![
                TColumn { column_name: Some(b"r:a".to_vec()), cell: Some(cell(b"x")) },
                TColumn { column_name: Some(b"r:v".to_vec()), cell: Some(cell(b"value-2")) },
            ]),
        };
        let no_cell = TRowResult::new(b"k3".to_vec(), BTreeMap::from([(b"r:a".to_vec(), cell(b"x"))]), None);
        let no_key = TRowResult { row: None, columns: None, sorted_columns: None };
        let bytes = encode(Some(&[by_map, sorted, no_cell, no_key]), None);
        let (rows, n) = decode_result(&bytes, b"r:v").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 4);
        assert_eq!(
            rows,
            vec![
                (Some(b"k1".to_vec()), Some(b"value-1".to_vec())),
                (Some(b"k2".to_vec()), Some(b"value-2".to_vec())),
                (Some(b"k3".to_vec()), None),
                (None, None),
            ]
        );
        // An empty reply.
        let (rows, n) = decode_result(&encode(Some(&[]), None), b"r:v").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rows.len(), n), (0, 0));
    }

    #[test]
    fn server_errors_and_hostile_replies_are_errors() {
        let io = IOError::new("RegionTooBusyException".to_owned(), true);
        let err = decode_result(&encode(None, Some(io)), b"r:v").err();
        let user = match err {
            Some(thrift::Error::User(u)) => u,
            other => panic!("{other:?}"),
        };
        let io = user.downcast_ref::<IOError>();
        assert_eq!(io.and_then(|e| e.can_retry), Some(true));
        // No result at all.
        assert!(matches!(decode_result(&encode(None, None), b"r:v"), Err(thrift::Error::Application(_))));
        // A row key claiming 2 GiB: refused before allocating.
        let mut bytes = encode(Some(&[TRowResult::new(b"k".to_vec(), BTreeMap::new(), None)]), None);
        // field 1 (string) of the row: type 11, id 1, length 1, "k"
        let field = [11u8, 0, 1, 0, 0, 0, 1, b'k'];
        let at = bytes.windows(field.len()).position(|w| w == field);
        assert!(at.is_some(), "{bytes:02x?}");
        let len_at = at.unwrap_or(0) + 3;
        bytes[len_at..len_at + 4].copy_from_slice(&0x7fff_ffffi32.to_be_bytes());
        assert!(decode_result(&bytes, b"r:v").is_err());
        // Truncated replies.
        let bytes = encode(Some(&[TRowResult::new(b"key".to_vec(), BTreeMap::new(), None)]), None);
        for cut in 0..bytes.len() {
            assert!(decode_result(&bytes[..cut], b"r:v").is_err(), "cut at {cut}");
        }
    }
}
