import { describe, expect, it } from 'vitest';
import { connegExpression, connegLines } from '../../src/smtp/conneg.ts';
import { formatReply, parseReply } from '../../src/smtp/reply-format.ts';
import { reply } from '../../src/model/reply.ts';

const EXPR = '(& (| (type="image/tiff") (type="image/jpeg")) (color=grey) (pix-x<=1728))';

describe('CONNEG reply lines (RFC 4141 shape)', () => {
  it('prints the RCPT text first, then CONNEG lines after the enhanced code', () => {
    const r = reply(250, 1, 5, ...connegLines('<fax@example.net> recipient ok', EXPR));
    expect(formatReply(r)).toBe(`250-2.1.5 <fax@example.net> recipient ok\r\n250 2.1.5 CONNEG ${EXPR}\r\n`);
  });

  it('splits long expressions over several lines and reads them back joined', () => {
    const long = `(| ${Array.from({ length: 60 }, (_, i) => `(type="image/x-${i}")`).join(' ')})`;
    const r = reply(250, 1, 5, ...connegLines('ok', long));
    expect(r.lines.length).toBeGreaterThan(2);
    expect(r.lines.every((l) => l.length <= 410)).toBe(true);
    expect(connegExpression(parseReply(formatReply(r))!)).toBe(long);
  });

  it.each([
    [['250-2.1.5 ok', '250-2.1.5 CONNEG (& (| (type="image/tiff")', '250 2.1.5 CONNEG    (color=grey))'], '(& (| (type="image/tiff") (color=grey))'],
    [['250-ok', '250 CONNEG (type="text/plain")'], '(type="text/plain")'],
    [['250-2.1.5 ok', '250 2.1.5 [CONNEG] (type="text/plain")'], '(type="text/plain")'],
    [['250 2.1.5 ok'], undefined],
    [['550-5.1.1 no', '550 5.1.1 CONNEG (type="text/plain")'], undefined],
  ])('reads %j', (lines, expression) => expect(connegExpression(parseReply(lines)!)).toBe(expression));
});
