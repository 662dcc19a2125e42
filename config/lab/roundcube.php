<?php
// Roundcube for the docker lab (included by the image from /var/roundcube/config/).
// It reads the final hop's Maildirs through Dovecot (log in as e.g. photo@drucof.lab,
// password "lab") and sends through the lab's smarthost, which lets the lab's
// private network relay without AUTH: so no SMTP AUTH here.
$config['product_name'] = 'drucof-relay lab: the final hop\'s Maildir';
$config['smtp_user'] = '';
$config['smtp_pass'] = '';
