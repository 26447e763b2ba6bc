//! Hand-built tar streams for tests: any name, link name or type, hostile ones included
//! (the tar crate's builder refuses `..`).

/// A tar stream being built.
#[derive(Default)]
pub(crate) struct TestTar {
    pub(crate) bytes: Vec<u8>,
}

/// One entry: name, type flag, mode, owner, mtime, link name, device numbers, PAX records, data.
pub(crate) struct E<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: u8,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: u64,
    pub(crate) link: &'a str,
    pub(crate) dev: (u32, u32),
    pub(crate) pax: Vec<(&'a str, Vec<u8>)>,
    pub(crate) data: &'a [u8],
}

impl<'a> E<'a> {
    pub(crate) fn file(name: &'a str, data: &'a [u8]) -> Self {
        E {
            name,
            kind: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: "",
            dev: (0, 0),
            pax: Vec::new(),
            data,
        }
    }
    pub(crate) fn dir(name: &'a str) -> Self {
        E { kind: b'5', mode: 0o755, ..E::file(name, b"") }
    }
    pub(crate) fn symlink(name: &'a str, target: &'a str) -> Self {
        E { kind: b'2', mode: 0o777, link: target, ..E::file(name, b"") }
    }
    pub(crate) fn hardlink(name: &'a str, target: &'a str) -> Self {
        E { kind: b'1', link: target, ..E::file(name, b"") }
    }
    pub(crate) fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub(crate) fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub(crate) fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub(crate) fn pax(mut self, key: &'a str, value: &[u8]) -> Self {
        self.pax.push((key, value.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn header(e: &E<'_>, size: u64) -> [u8; 512] {
    let (name, link) = (e.name, e.link);
    let mut h = [0u8; 512];
    assert!(name.len() <= 100 && link.len() <= 100, "test names fit the ustar fields");
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], u64::from(e.uid));
    octal(&mut h[116..124], u64::from(e.gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], e.mtime);
    h[156] = e.kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(e.dev.0));
    octal(&mut h[337..345], u64::from(e.dev.1));
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl TestTar {
    pub(crate) fn new() -> Self {
        TestTar::default()
    }

    fn block(&mut self, h: &[u8; 512], data: &[u8]) {
        self.bytes.extend_from_slice(h);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Appends an entry (with a PAX header first when it has records).
    pub(crate) fn add(mut self, e: E<'_>) -> Self {
        if !e.pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &e.pax {
                let body_len = 1 + k.len() + 1 + v.len() + 1;
                let mut len = body_len + 1;
                while format!("{len}").len() + body_len != len {
                    len = format!("{len}").len() + body_len;
                }
                records.extend_from_slice(format!("{len} {k}=").as_bytes());
                records.extend_from_slice(v);
                records.push(b'\n');
            }
            let pax = E { name: "PaxHeader", kind: b'x', mtime: 0, ..E::file("", b"") };
            let h = header(&pax, records.len() as u64);
            self.block(&h, &records);
        }
        let h = header(&e, e.data.len() as u64);
        self.block(&h, e.data);
        self
    }

    /// The stream with its end-of-archive blocks.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}
