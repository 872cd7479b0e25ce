// nodemailer's smtp-server as a peer in make bench (scripts/bench.py, W6).
//
//   node smtp_server_peer.js PORT CERT KEY
//
// Listens on 127.0.0.1:PORT, offers STARTTLS with CERT and KEY, takes every
// sender and recipient, and parses each message with mailparser (its
// subject read), as luasmtpd's bench script parses and reads one.
// The modules come from scripts/peers/install.sh (NODE_PATH).
'use strict';
const fs = require('fs');
const { SMTPServer } = require('smtp-server');
const { simpleParser } = require('mailparser');

const [port, cert, key] = process.argv.slice(2);
const server = new SMTPServer({
    key: fs.readFileSync(key),
    cert: fs.readFileSync(cert),
    name: 'bench.test',
    authOptional: true,
    disabledCommands: ['AUTH'],
    maxClients: 5000,
    logger: false,
    onData(stream, session, done) {
        simpleParser(stream).then((mail) => { void mail.subject; done(); }, done);
    },
});
server.on('error', (err) => { console.error(err.message); });
server.listen(Number(port), '127.0.0.1');
